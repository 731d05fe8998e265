"""Optimizers: the same parameters and gradient sequence stepped in NumPy and in torch.optim agree."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cnn.errors import CheckpointError, ConfigError
from cnn.optimizers import SGD, Adam, AdamW, Optimizer, make_optimizer

torch = pytest.importorskip("torch")

SHAPES = [(1,), (5,), (3, 4), (2, 3, 3, 3)]
STEPS = 8

CASES = [
    (SGD, {"lr": 0.1}),
    (SGD, {"lr": 0.1, "momentum": 0.9}),
    (SGD, {"lr": 0.05, "momentum": 0.9, "dampening": 0.3}),
    (SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    (SGD, {"lr": 0.1, "weight_decay": 0.01}),
    (SGD, {"lr": 0.1, "momentum": 0.8, "nesterov": True, "weight_decay": 0.05}),
    (Adam, {"lr": 1e-2}),
    (Adam, {"lr": 1e-2, "weight_decay": 0.1}),
    (Adam, {"lr": 3e-2, "betas": (0.8, 0.99), "eps": 1e-6}),
    (Adam, {"lr": 1e-2, "betas": (0.3, 0.9)}),  # 1 - beta1 >= 0.5: torch's other lerp formula
    (Adam, {"lr": 1e-2, "amsgrad": True, "weight_decay": 0.01}),
    (AdamW, {"lr": 1e-2}),
    (AdamW, {"lr": 1e-2, "weight_decay": 0.1, "amsgrad": True}),
    (AdamW, {"lr": 1e-2, "weight_decay": 0.0}),
]
IDS = [f"{cls.__name__}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for cls, kw in CASES]


def _torch_class(cls: type[Optimizer]) -> type:
    return {SGD: torch.optim.SGD, Adam: torch.optim.Adam, AdamW: torch.optim.AdamW}[cls]


def _problem(seed: int, dtype: type = np.float64) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    """Initial parameters and a sequence of STEPS gradients for each (some large, some tiny)."""
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[(rng.standard_normal(s) * 10.0 ** rng.integers(-3, 2)).astype(dtype) for s in SHAPES]]
    for _ in range(STEPS - 1):
        grads.append([(rng.standard_normal(s) * 10.0 ** rng.integers(-3, 2)).astype(dtype) for s in SHAPES])
    return params, grads


def _run_numpy(cls, kw, params, grad_seq, lrs=None) -> tuple[list[np.ndarray], Optimizer]:
    params = [p.copy() for p in params]
    grads = [np.zeros_like(p) for p in params]
    opt = cls(list(zip(params, grads)), **kw)
    for t, step_grads in enumerate(grad_seq):
        if lrs is not None:
            opt.lr = lrs[t]
        for g, new in zip(grads, step_grads):
            g[...] = new  # as a layer's backward does: overwrite in place
        opt.step()
    return params, opt


def _run_torch(cls, kw, params, grad_seq, lrs=None) -> list[np.ndarray]:
    tparams = [torch.tensor(p, requires_grad=True) for p in params]
    opt = _torch_class(cls)(tparams, foreach=False, **kw)
    for t, step_grads in enumerate(grad_seq):
        if lrs is not None:
            opt.param_groups[0]["lr"] = lrs[t]
        for p, g in zip(tparams, step_grads):
            p.grad = torch.tensor(g)
        opt.step()
    return [p.detach().numpy() for p in tparams]


@pytest.mark.parametrize(("cls", "kw"), CASES, ids=IDS)
def test_float64_updates_match_torch_optim_over_several_steps(cls, kw):
    params, grad_seq = _problem(0)
    ours, _ = _run_numpy(cls, kw, params, grad_seq)
    ref = _run_torch(cls, kw, params, grad_seq)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize(("cls", "kw"), [CASES[3], CASES[10], CASES[12]], ids=[IDS[3], IDS[10], IDS[12]])
def test_learning_rate_changed_between_steps_is_used_like_torch(cls, kw):
    params, grad_seq = _problem(1)
    lrs = [0.0] + [kw["lr"] * 0.7**t for t in range(1, STEPS)]  # lr = 0 (warm-up) moves nothing
    ours, _ = _run_numpy(cls, kw, params, grad_seq, lrs)
    ref = _run_torch(cls, kw, params, grad_seq, lrs)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize(("cls", "kw"), [CASES[5], CASES[10], CASES[12]], ids=[IDS[5], IDS[10], IDS[12]])
def test_float32_parameters_keep_float32_state_and_match_torch(cls, kw):
    params, grad_seq = _problem(2, np.float32)
    ours, opt = _run_numpy(cls, kw, params, grad_seq)
    ref = _run_torch(cls, kw, params, grad_seq)
    for a, b in zip(ours, ref):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    arrays = [v for v in opt.state_dict().values() if isinstance(v, np.ndarray)]
    assert arrays and all(v.dtype == np.float32 for v in arrays)


@pytest.mark.parametrize(
    ("cls", "kw"), [c for c in CASES if c[0] is not SGD], ids=[i for i in IDS if "SGD" not in i]
)
def test_adam_split_over_the_kernel_threads_is_exact_and_matches_torch(cls, kw):
    # Large enough that the element-wise update is split over the thread pool (blocks of >= 32768).
    from cnn import kernels

    rng = np.random.default_rng(3)
    shapes = [(300, 400), (7,), (50_000,)]
    params = [rng.standard_normal(s) for s in shapes]
    grad_seq = [[rng.standard_normal(s) for s in shapes] for _ in range(3)]
    before = kernels.get_num_threads()
    try:
        kernels.set_num_threads(1)
        serial, _ = _run_numpy(cls, kw, params, grad_seq)
        kernels.set_num_threads(2)
        split, _ = _run_numpy(cls, kw, params, grad_seq)
    finally:
        kernels.set_num_threads(before)
    for a, b, t in zip(serial, split, _run_torch(cls, kw, params, grad_seq)):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(b, t, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(("cls", "kw"), [CASES[5], CASES[10], CASES[12]], ids=[IDS[5], IDS[10], IDS[12]])
def test_adam_on_non_contiguous_parameters_updates_them_exactly_as_on_contiguous_ones(cls, kw):
    # C-contiguous parameters are gathered and updated block by block in the threads; any other layout
    # (a Fortran-order array here) through one serial gather and scatter. The same numbers either way.
    rng = np.random.default_rng(4)
    shapes = [(300, 400), (7,), (250, 200)]
    params = [rng.standard_normal(s) for s in shapes]
    grad_seq = [[rng.standard_normal(s) for s in shapes] for _ in range(3)]
    contiguous, _ = _run_numpy(cls, kw, params, grad_seq)
    fortran = [np.asfortranarray(p) for p in params]
    grads = [np.asfortranarray(np.zeros_like(p)) for p in params]
    opt = cls(list(zip(fortran, grads)), **kw)
    for step_grads in grad_seq:
        for g, new in zip(grads, step_grads):
            g[...] = new
        opt.step()
    assert not fortran[0].flags.c_contiguous
    for a, b in zip(contiguous, fortran):
        np.testing.assert_array_equal(a, b)


def test_parameters_are_updated_in_place_and_gradients_are_left_untouched():
    params, grad_seq = _problem(3)
    grads = [g.copy() for g in grad_seq[0]]
    before = [p.copy() for p in params]
    opt = Adam(list(zip(params, grads)), lr=0.1, weight_decay=0.1)
    ids = [id(p) for p in params]
    opt.step()
    assert [id(p) for p in opt.params] == ids
    assert all(not np.array_equal(p, b) for p, b in zip(params, before))
    for g, g0 in zip(grads, grad_seq[0]):
        np.testing.assert_array_equal(g, g0)


def test_mixed_dtypes_are_stepped_in_their_own_dtype():
    p32, p64 = np.ones((3, 2), np.float32), np.ones(4, np.float64)
    g32, g64 = np.full((3, 2), 0.5, np.float32), np.full(4, -0.25, np.float64)
    opt = Adam([(p32, g32), (p64, g64)], lr=0.1)
    opt.step()
    assert p32.dtype == np.float32 and p64.dtype == np.float64
    np.testing.assert_allclose(p32, 0.9, rtol=1e-6)  # first Adam step moves by lr * sign(g)
    np.testing.assert_allclose(p64, 0.1 * 0.25 / (0.25 + 1e-8) + 1.0, rtol=1e-15)
    sd = opt.state_dict()
    assert sd["state.0.exp_avg"].dtype == np.float32 and sd["state.1.exp_avg"].dtype == np.float64


def _npz_round_trip(state: dict, path) -> dict:
    np.savez(path, **{k: np.asarray(v) for k, v in state.items()})
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _json_round_trip(state: dict) -> dict:
    text = json.dumps({k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in state.items()})
    return {k: np.asarray(v) if isinstance(v, list) else v for k, v in json.loads(text).items()}


@pytest.mark.parametrize(("cls", "kw"), [CASES[5], CASES[10], CASES[12]], ids=[IDS[5], IDS[10], IDS[12]])
@pytest.mark.parametrize("via", ["npz", "json"])
def test_state_dict_round_trip_continues_exactly_like_an_uninterrupted_run(cls, kw, via, tmp_path):
    params, grad_seq = _problem(4)
    uninterrupted, _ = _run_numpy(cls, kw, params, grad_seq)

    half = STEPS // 2
    first, opt = _run_numpy(cls, kw, params, grad_seq[:half])
    state = opt.state_dict()
    assert all(isinstance(v, (np.ndarray, int, float, bool, str)) for v in state.values())
    state = _npz_round_trip(state, tmp_path / "opt.npz") if via == "npz" else _json_round_trip(state)
    restored = [p.copy() for p in first]
    opt.step()  # the saved state must not alias the live buffers

    grads = [np.zeros_like(p) for p in restored]
    resumed = cls(list(zip(restored, grads)), **kw)
    resumed.load_state_dict(state)
    assert resumed.step_count == half
    for step_grads in grad_seq[half:]:
        for g, new in zip(grads, step_grads):
            g[...] = new
        resumed.step()
    for a, b in zip(restored, uninterrupted):
        np.testing.assert_array_equal(a, b)


def test_loading_state_of_another_optimizer_or_shape_or_setting_raises_checkpoint_error():
    params, grad_seq = _problem(5)
    pairs = list(zip(params, grad_seq[0]))
    adam_state = Adam(pairs, lr=0.1).state_dict()
    with pytest.raises(CheckpointError, match=r"state is for Adam, but this optimizer is SGD"):
        SGD(pairs, lr=0.1).load_state_dict(adam_state)
    with pytest.raises(CheckpointError, match=r"'weight_decay' is 0.0 in the checkpoint but 0.1"):
        Adam(pairs, lr=0.1, weight_decay=0.1).load_state_dict(adam_state)
    bad = dict(adam_state, **{"state.2.exp_avg": np.zeros((4, 3))})
    with pytest.raises(CheckpointError, match=r"'state.2.exp_avg' has shape \(4, 3\).*shape \(3, 4\)"):
        Adam(pairs, lr=0.1).load_state_dict(bad)
    with pytest.raises(CheckpointError, match=r"checkpoint has 4 parameter arrays, this optimizer has 3"):
        Adam(pairs[:3], lr=0.1).load_state_dict(adam_state)
    missing = {k: v for k, v in adam_state.items() if k != "state.1.exp_avg_sq"}
    with pytest.raises(CheckpointError, match=r"no key 'state.1.exp_avg_sq'"):
        Adam(pairs, lr=0.1).load_state_dict(missing)


def test_failed_load_leaves_the_optimizer_unchanged():
    params, grad_seq = _problem(6)
    opt = Adam(list(zip(params, grad_seq[0])), lr=0.1)
    opt.step()
    before = opt.state_dict()
    bad = {k: (v + 1 if isinstance(v, np.ndarray) else v) for k, v in before.items()}
    bad["state.3.exp_avg_sq"] = np.zeros(3)
    bad["lr"] = 0.5
    with pytest.raises(CheckpointError):
        opt.load_state_dict(bad)
    after = opt.state_dict()
    assert after["lr"] == 0.1
    for k, v in before.items():
        np.testing.assert_array_equal(after[k], v)


def test_invalid_arguments_raise_clear_errors():
    p, g = np.zeros(3), np.zeros(3)
    with pytest.raises(ValueError, match=r"empty parameter list"):
        SGD([], lr=0.1)
    with pytest.raises(ValueError, match=r"param float64 \(3,\) and grad float64 \(4,\)"):
        SGD([(p, np.zeros(4))], lr=0.1)
    with pytest.raises(ValueError, match=r"param float64 .* grad float32"):
        SGD([(p, g.astype(np.float32))], lr=0.1)
    with pytest.raises(ConfigError, match=r"nesterov=true requires momentum > 0"):
        SGD([(p, g)], lr=0.1, nesterov=True)
    with pytest.raises(ConfigError, match=r"beta2 must be in \[0, 1\)"):
        Adam([(p, g)], betas=(0.9, 1.0))
    with pytest.raises(ConfigError, match=r"optimizer.lr must be >= 0"):
        Adam([(p, g)], lr=-1.0)


def test_make_optimizer_builds_each_configured_optimizer():
    pairs = [(np.zeros(3), np.zeros(3))]
    adam = make_optimizer("adam", pairs, 1e-3, weight_decay=0.1, betas=[0.8, 0.9], eps=1e-7, momentum=0.9)
    assert type(adam) is Adam
    assert (adam.lr, adam.betas, adam.eps, adam.weight_decay) == (1e-3, (0.8, 0.9), 1e-7, 0.1)
    adamw = make_optimizer("adamw", pairs, 1e-3)
    assert type(adamw) is AdamW and adamw.weight_decay == 0.0  # the config's value, not torch's default
    sgd = make_optimizer("sgd", pairs, 0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    assert type(sgd) is SGD and (sgd.momentum, sgd.nesterov, sgd.weight_decay, sgd.dampening) == (
        0.9,
        True,
        1e-4,
        0.0,
    )


def test_make_optimizer_rejects_unknown_names_and_non_positive_lr_with_config_error():
    pairs = [(np.zeros(3), np.zeros(3))]
    with pytest.raises(ConfigError, match=r"unknown optimizer 'rmsprop'; expected one of adam, adamw, sgd"):
        make_optimizer("rmsprop", pairs, 1e-3)
    with pytest.raises(ConfigError, match=r"optimizer.lr must be > 0, got 0"):
        make_optimizer("adam", pairs, 0.0)
    with pytest.raises(ConfigError, match=r"optimizer.momentum must be >= 0"):
        make_optimizer("sgd", pairs, 0.1, momentum=-0.5)
