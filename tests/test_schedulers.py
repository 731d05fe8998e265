"""Schedulers: the learning-rate sequences equal torch.optim.lr_scheduler's, epoch by epoch, to the bit."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cnn.errors import CheckpointError, ConfigError
from cnn.optimizers import SGD, Adam
from cnn.schedulers import (
    CosineAnnealingLR,
    ExponentialLR,
    LinearLR,
    ReduceLROnPlateau,
    SequentialLR,
    StepLR,
    make_scheduler,
)

torch = pytest.importorskip("torch")
tsched = torch.optim.lr_scheduler

EPOCHS = 30
BASE_LR = 0.1
# A validation loss that improves, stalls, jumps, improves again: exercises patience and cooldown.
METRICS = [1.0, 0.8, 0.79995, 0.81, 0.8, 0.8, 0.7, 0.71, 0.72, 0.69, 0.69, 0.69, 0.69, 0.5, 0.5]
METRICS = METRICS + METRICS[::-1]


def _ours_opt(lr: float = BASE_LR) -> SGD:
    return SGD([(np.zeros(2), np.zeros(2))], lr=lr)


def _torch_opt(lr: float = BASE_LR):
    return torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=lr)


def _ours_sequence(opt, sched, epochs: int = EPOCHS, metrics=METRICS) -> list[float]:
    lrs = [opt.lr]
    for e in range(epochs):
        if sched is not None:
            sched.step(metrics[e]) if sched.needs_metric else sched.step()
        lrs.append(opt.lr)
    return lrs


def _torch_sequence(opt, step, epochs: int = EPOCHS, metrics=METRICS) -> list[float]:
    """``step(e, metric)`` advances the torch scheduler(s) at the end of epoch ``e``."""
    lrs = [opt.param_groups[0]["lr"]]
    for e in range(epochs):
        opt.step()  # no gradients: a no-op that keeps torch from warning about the call order
        step(e, metrics[e])
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


EPOCH_CASES = {
    "step-3-0.5": (lambda o: StepLR(o, 3, 0.5), lambda o: tsched.StepLR(o, 3, 0.5)),
    "step-1-default-gamma": (lambda o: StepLR(o, 1), lambda o: tsched.StepLR(o, 1)),
    "exponential-0.9": (lambda o: ExponentialLR(o, 0.9), lambda o: tsched.ExponentialLR(o, 0.9)),
    "cosine-10": (lambda o: CosineAnnealingLR(o, 10), lambda o: tsched.CosineAnnealingLR(o, 10)),
    "cosine-7-eta-1e-3": (
        lambda o: CosineAnnealingLR(o, 7, 1e-3),
        lambda o: tsched.CosineAnnealingLR(o, 7, 1e-3),
    ),
    "linear-default": (lambda o: LinearLR(o), lambda o: tsched.LinearLR(o)),
    "linear-decay": (lambda o: LinearLR(o, 1.0, 0.1, 6), lambda o: tsched.LinearLR(o, 1.0, 0.1, 6)),
    "sequential-linear-cosine": (
        lambda o: SequentialLR(o, [LinearLR(o, 0.25, 1.0, 3), CosineAnnealingLR(o, 8, 1e-4)], [3]),
        lambda o: tsched.SequentialLR(
            o, [tsched.LinearLR(o, 0.25, 1.0, 3), tsched.CosineAnnealingLR(o, 8, 1e-4)], [3]
        ),
    ),
    "sequential-three": (
        lambda o: SequentialLR(
            o, [LinearLR(o, 0.5, 1.0, 2), StepLR(o, 2, 0.5), ExponentialLR(o, 0.8)], [2, 9]
        ),
        lambda o: tsched.SequentialLR(
            o,
            [tsched.LinearLR(o, 0.5, 1.0, 2), tsched.StepLR(o, 2, 0.5), tsched.ExponentialLR(o, 0.8)],
            [2, 9],
        ),
    ),
}


@pytest.mark.parametrize("case", list(EPOCH_CASES))
def test_epoch_scheduler_sequence_equals_torch_for_30_epochs(case):
    make_ours, make_torch = EPOCH_CASES[case]
    opt = _ours_opt()
    ours = _ours_sequence(opt, make_ours(opt))
    topt = _torch_opt()
    tsch = make_torch(topt)
    ref = _torch_sequence(topt, lambda e, m: tsch.step())
    assert ours == ref


PLATEAU_CASES = [
    {"mode": "min", "factor": 0.5, "patience": 2},
    {"mode": "min", "factor": 0.1, "patience": 0, "threshold": 0.05, "threshold_mode": "abs", "cooldown": 2},
    {"mode": "max", "factor": 0.5, "patience": 1, "min_lr": 0.02},
    {"mode": "max", "factor": 0.7, "patience": 1, "threshold": 0.01, "threshold_mode": "abs"},
    {"mode": "min", "factor": 0.5, "patience": 0, "eps": 0.03},  # 0.05 -> 0.025 is below eps: skipped
    {"mode": "min", "factor": 0.5, "patience": 1, "threshold": 0.0},  # an equal metric is no improvement
]


@pytest.mark.parametrize("kw", PLATEAU_CASES, ids=[str(i) for i in range(len(PLATEAU_CASES))])
def test_reduce_on_plateau_follows_torch_on_a_scripted_metric_sequence(kw):
    opt = _ours_opt()
    ours = _ours_sequence(opt, ReduceLROnPlateau(opt, **kw))
    topt = _torch_opt()
    tsch = tsched.ReduceLROnPlateau(topt, **kw)
    ref = _torch_sequence(topt, lambda e, m: tsch.step(m))
    assert ours == ref
    assert min(ours) < BASE_LR  # the script did trigger reductions


def _torch_twin(name: str, opt, **kw):
    """The torch construction documented in cnn/schedulers.py for each config (what the torch trainer
    builds); returns ``step(epoch, metric)`` or None."""
    w = kw.get("warmup_epochs", 0)
    main = None
    if name == "step":
        main = tsched.StepLR(opt, step_size=kw["step_size"], gamma=kw.get("gamma", 0.1))
    elif name == "exponential":
        main = tsched.ExponentialLR(opt, gamma=kw["gamma"])
    elif name == "cosine":
        main = tsched.CosineAnnealingLR(opt, T_max=kw["T_max"], eta_min=kw.get("eta_min", 0.0))
    elif name == "plateau":
        main = tsched.ReduceLROnPlateau(
            opt, mode=kw.get("mode", "min"), factor=kw.get("factor", 0.1), patience=kw.get("patience", 10)
        )
    if w == 0:
        if main is None:
            return None
        return (lambda e, m: main.step(m)) if name == "plateau" else (lambda e, m: main.step())
    warm = tsched.LinearLR(opt, start_factor=1.0 / (w + 1), end_factor=1.0, total_iters=w)
    if main is None:
        return lambda e, m: warm.step()
    if name == "plateau":
        return lambda e, m: warm.step() if e < w else main.step(m)
    seq = tsched.SequentialLR(opt, [warm, main], milestones=[w])
    return lambda e, m: seq.step()


CONFIGS = [
    ("none", {}),
    ("none", {"warmup_epochs": 3}),
    ("step", {"step_size": 4, "gamma": 0.5}),
    ("step", {"step_size": 2, "warmup_epochs": 2}),
    ("exponential", {"gamma": 0.85, "warmup_epochs": 1}),
    ("cosine", {"T_max": 12}),
    ("cosine", {"T_max": 10, "eta_min": 1e-4, "warmup_epochs": 5}),
    ("plateau", {"factor": 0.5, "patience": 1}),
    ("plateau", {"factor": 0.3, "patience": 0, "mode": "max", "warmup_epochs": 4}),
]
CONFIG_IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for n, kw in CONFIGS]


@pytest.mark.parametrize(("name", "kw"), CONFIGS, ids=CONFIG_IDS)
def test_make_scheduler_equals_its_documented_torch_twin(name, kw):
    opt = _ours_opt()
    sched = make_scheduler(name, opt, **kw)
    ours = _ours_sequence(opt, sched)
    topt = _torch_opt()
    step = _torch_twin(name, topt, **kw)
    ref = _torch_sequence(topt, step or (lambda e, m: None))
    assert ours == ref


def test_make_scheduler_returns_none_for_none_and_a_ramp_for_a_bare_warmup():
    assert make_scheduler("none", _ours_opt(), warmup_epochs=0, step_size=None, gamma=0.5) is None
    opt = _ours_opt(0.4)
    lrs = _ours_sequence(opt, make_scheduler("none", opt, warmup_epochs=3), epochs=6)
    np.testing.assert_allclose(lrs, [0.1, 0.2, 0.3, 0.4, 0.4, 0.4, 0.4], rtol=1e-15)


def test_warmup_reaches_the_full_rate_when_the_main_schedule_starts():
    opt = _ours_opt(0.3)
    lrs = _ours_sequence(opt, make_scheduler("cosine", opt, T_max=4, warmup_epochs=2), epochs=6)
    np.testing.assert_allclose(lrs[:3], [0.1, 0.2, 0.3], rtol=1e-15)  # then cosine from its epoch 0
    np.testing.assert_allclose(
        lrs[2:7], [0.3 * (1 + math.cos(math.pi * t / 4)) / 2 for t in range(5)], atol=1e-15
    )


def test_needs_metric_tells_the_trainer_how_to_step():
    opt = _ours_opt()
    assert make_scheduler("plateau", opt).needs_metric
    assert make_scheduler("plateau", opt, warmup_epochs=2).needs_metric
    assert not make_scheduler("cosine", opt, T_max=3, warmup_epochs=2).needs_metric
    assert not make_scheduler("step", opt, step_size=3).needs_metric
    sched = make_scheduler("plateau", opt, warmup_epochs=1)
    sched.step()  # the warm-up ignores the metric
    with pytest.raises(ValueError, match=r"step\(metric\) needs the metric"):
        sched.step()


def _round_trip(state: dict, via: str, tmp_path) -> dict:
    assert all(isinstance(v, (int, float, str)) for v in state.values()), state
    if via == "json":
        return json.loads(json.dumps(state))
    np.savez(tmp_path / "sched.npz", **{k: np.asarray(v) for k, v in state.items()})
    with np.load(tmp_path / "sched.npz", allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize(("name", "kw"), CONFIGS[1:], ids=CONFIG_IDS[1:])
@pytest.mark.parametrize("via", ["json", "npz"])
def test_resuming_from_state_dicts_continues_the_same_sequence(name, kw, via, tmp_path):
    opt = _ours_opt()
    full = _ours_sequence(opt, make_scheduler(name, opt, **kw))

    stop = 6
    opt = _ours_opt()
    sched = make_scheduler(name, opt, **kw)
    first = _ours_sequence(opt, sched, epochs=stop)
    opt_state, sched_state = opt.state_dict(), _round_trip(sched.state_dict(), via, tmp_path)

    resumed_opt = _ours_opt()  # built from the config again, as a resumed run does
    resumed = make_scheduler(name, resumed_opt, **kw)
    resumed.load_state_dict(sched_state)
    resumed_opt.load_state_dict(opt_state)
    rest = [resumed_opt.lr]
    for e in range(stop, EPOCHS):
        resumed.step(METRICS[e]) if resumed.needs_metric else resumed.step()
        rest.append(resumed_opt.lr)
    assert first + rest[1:] == full


def test_loading_the_state_of_another_schedule_raises_checkpoint_error():
    opt = _ours_opt()
    cosine = make_scheduler("cosine", opt, T_max=10, warmup_epochs=2)
    with pytest.raises(
        CheckpointError, match="'after' is 'StepLR' in the checkpoint but 'CosineAnnealingLR'"
    ):
        cosine.load_state_dict(make_scheduler("step", _ours_opt(), step_size=3, warmup_epochs=2).state_dict())
    with pytest.raises(CheckpointError, match="'T_max' is 12 in the checkpoint but 10 here"):
        cosine.load_state_dict(make_scheduler("cosine", _ours_opt(), T_max=12, warmup_epochs=2).state_dict())
    with pytest.raises(CheckpointError, match="is for ExponentialLR, but this scheduler is StepLR"):
        StepLR(opt, 3).load_state_dict(ExponentialLR(_ours_opt(), 0.5).state_dict())
    state = StepLR(_ours_opt(), 3).state_dict()
    del state["last_epoch"]
    with pytest.raises(CheckpointError, match="StepLR state has no key 'last_epoch'"):
        StepLR(opt, 3).load_state_dict(state)


def test_make_scheduler_rejects_bad_configs_with_config_error_naming_the_key():
    opt = Adam([(np.zeros(1), np.zeros(1))], lr=1e-3)
    with pytest.raises(
        ConfigError, match="unknown scheduler 'onecycle'; expected one of none, step, exponential"
    ):
        make_scheduler("onecycle", opt)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) milestones"):
        make_scheduler("step", opt, step_size=2, milestones=[3])
    with pytest.raises(ConfigError, match=r"scheduler.step_size is required for scheduler 'step'"):
        make_scheduler("step", opt, step_size=None)
    with pytest.raises(ConfigError, match=r"scheduler.T_max is required"):
        make_scheduler("cosine", opt)
    with pytest.raises(ConfigError, match=r"scheduler.gamma is required"):
        make_scheduler("exponential", opt)
    with pytest.raises(ConfigError, match=r"scheduler.gamma must be a number > 0, got -0.5"):
        make_scheduler("step", opt, step_size=2, gamma=-0.5)
    with pytest.raises(ConfigError, match=r"scheduler.step_size must be an integer >= 1, got 0"):
        make_scheduler("step", opt, step_size=0)
    with pytest.raises(ConfigError, match=r"scheduler.warmup_epochs must be an integer >= 0, got -1"):
        make_scheduler("none", opt, warmup_epochs=-1)
    with pytest.raises(ConfigError, match=r"plateau needs mode 'min' or 'max'"):
        make_scheduler("plateau", opt, mode="lowest")
    assert opt.lr == 1e-3  # a rejected config leaves the optimizer alone
