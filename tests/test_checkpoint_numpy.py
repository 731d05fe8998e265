"""CNN.save / CNN.load: round trips, and clear CheckpointErrors for every way a file can be wrong."""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np
import pytest

from cnn import CNN
from cnn.checkpoint import encode_json, read_npz, write_npz_atomic
from cnn.errors import CheckpointError

TINY = dict(input_shape=(1, 8, 8), num_classes=3, conv_channels=((4,), (6,)), dense_units=(8,))


def trained_tiny(dtype=np.float32, seed: int = 0) -> CNN:
    """A tiny model whose batch-norm statistics and weights have moved away from their initial values."""
    rng = np.random.default_rng(seed)
    model = CNN(**TINY, dtype=dtype, seed=seed)
    model.fit(rng.standard_normal((16, 1, 8, 8)), rng.integers(0, 3, 16), epochs=1, batch_size=8, verbose=0)
    return model


def moved(model: CNN, seed: int = 1) -> CNN:
    """``model`` with every parameter and buffer (BatchNorm running statistics and batch counts included)
    shifted away from its value, so a load that ignored any array cannot pass for a round trip."""
    rng = np.random.default_rng(seed)
    model.load_state_dict(
        {
            k: v + (rng.uniform(0.5, 1.5, v.shape) if v.dtype.kind == "f" else 3)
            for k, v in model.state_dict().items()
        }
    )
    return model


def assert_every_array_differs_from_a_fresh_model(model: CNN) -> None:
    """What a load that ignored the file's arrays would produce is a fresh model of the same config,
    dtype and seed: check that it differs from ``model`` in every array, weights and buffers alike."""
    fresh = CNN.from_config(model.config, dtype=model.dtype, seed=model.seed).state_dict()
    for k, v in model.state_dict().items():
        assert not np.array_equal(v, fresh[k]), f"{k} still has its initial value"


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[CNN, os.PathLike]:
    model = trained_tiny()
    return model, model.save(tmp_path_factory.mktemp("ck") / "model.npz")


def rewrite(src, dst, change: dict | None = None, drop: tuple[str, ...] = ()) -> str:
    """Copy the checkpoint ``src`` to ``dst`` with members replaced / added (``change``) or removed."""
    members = {k: v for k, v in read_npz(src).items() if k not in drop}
    members.update(change or {})
    with open(dst, "wb") as f:
        np.savez(f, **members)
    return str(dst)


# --------------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_save_then_load_gives_identical_predictions_and_state(tmp_path, dtype) -> None:
    model = trained_tiny(dtype)
    assert_every_array_differs_from_a_fresh_model(model)  # training moved weights and running statistics
    path = model.save(tmp_path / "m.npz")
    assert os.listdir(tmp_path) == ["m.npz"]  # written atomically: no temporary left
    loaded = CNN.load(path)
    assert loaded.config == model.config and loaded.dtype == np.dtype(dtype) and loaded.seed == model.seed
    assert not loaded.training  # ready for inference
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[k], v, err_msg=k)
        assert loaded.state_dict()[k].dtype == v.dtype
    X = np.random.default_rng(1).standard_normal((9, 1, 8, 8))
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_the_default_network_round_trips(tmp_path) -> None:
    model = moved(CNN(seed=2))
    assert_every_array_differs_from_a_fresh_model(model)
    loaded = CNN.load(model.save(tmp_path / "seed.npz"))
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[k], v, err_msg=k)
    X = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_the_file_is_a_plain_npz_with_a_json_header(saved) -> None:
    _, path = saved
    with np.load(path, allow_pickle=False) as f:
        assert json.loads(str(f["__format__"])) == "cnn-checkpoint"
        assert json.loads(str(f["__version__"])) == 1
        assert json.loads(str(f["__config__"]))["conv_channels"] == [[4], [6]]
        assert json.loads(str(f["__dtype__"])) == "float32"
        assert f["features.0.weight"].shape == (4, 1, 3, 3)


def test_saving_overwrites_atomically(tmp_path) -> None:
    path = tmp_path / "m.npz"
    CNN(**TINY, seed=0).save(path)
    CNN(**TINY, seed=1).save(path)
    np.testing.assert_array_equal(
        CNN.load(path).state_dict()["features.0.weight"],
        CNN(**TINY, seed=1).state_dict()["features.0.weight"],
    )
    assert os.listdir(tmp_path) == ["m.npz"]


# ------------------------------------------------------------------------------------- clear errors
def test_a_foreign_npz_is_not_a_cnn_checkpoint(tmp_path) -> None:
    path = tmp_path / "foreign.npz"
    np.savez(path, weights=np.ones(3))
    with pytest.raises(CheckpointError) as info:
        CNN.load(path)
    assert str(info.value) == f"{path}: not a cnn checkpoint (missing key '__format__')"


def test_a_checkpoint_without_its_config_names_the_missing_key(saved, tmp_path) -> None:
    path = rewrite(saved[1], tmp_path / "x.npz", drop=("__config__",))
    with pytest.raises(CheckpointError) as info:
        CNN.load(path)
    assert str(info.value) == f"{path}: not a cnn checkpoint (missing key '__config__')"


@pytest.mark.parametrize(
    "content", [b"", b"PK\x03\x04 not really", b"\x93NUMPY" + b"\0" * 50, b"plain text\n"]
)
def test_non_zip_files_raise_a_clear_error(tmp_path, content: bytes) -> None:
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"bad\.npz: not a readable \.npz checkpoint"):
        CNN.load(path)


def test_a_missing_file_raises_a_clear_error(tmp_path) -> None:
    with pytest.raises(CheckpointError, match=r"nope\.npz: no such checkpoint file"):
        CNN.load(tmp_path / "nope.npz")


def test_every_truncation_of_a_checkpoint_raises_a_clear_error(saved, tmp_path) -> None:
    data = open(saved[1], "rb").read()
    path = tmp_path / "cut.npz"
    for cut in range(0, len(data), max(1, len(data) // 97)):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=r"cut\.npz"):
            CNN.load(path)


def test_a_checkpoint_of_another_architecture_names_the_first_mismatched_key(tmp_path) -> None:
    wide = CNN(**{**TINY, "conv_channels": ((5,), (6,))})
    path = wide.save(tmp_path / "wide.npz")
    with pytest.raises(CheckpointError) as info:
        CNN(**TINY).load_state_dict(CNN.load(path).state_dict(), source=str(path))
    assert str(info.value) == (
        f"{path}: shape mismatch for 'features.0.weight': model has (4, 1, 3, 3), checkpoint has (5, 1, 3, 3)"
    )
    # The file's own config and its arrays disagree: caught before building the network.
    lying = rewrite(path, tmp_path / "lying.npz", {"__config__": encode_json(CNN(**TINY).config.to_dict())})
    with pytest.raises(CheckpointError) as info:
        CNN.load(lying)
    assert str(info.value) == (
        f"{lying}: shape mismatch for 'features.0.weight': config says (4, 1, 3, 3), "
        "checkpoint has (5, 1, 3, 3)"
    )


@pytest.mark.parametrize(
    ("change", "drop", "match"),
    [
        ({"__format__": encode_json("something-else")}, (), "__format__ is 'something-else'"),
        ({"__version__": encode_json(2)}, (), "version 2 is not supported"),
        ({"__config__": np.array("{not json")}, (), "'__config__' is not valid JSON"),
        ({"__config__": encode_json([1, 2])}, (), "'__config__' must be a JSON object"),
        ({"__config__": encode_json({"kernel_size": 4})}, (), "not a valid architecture.*kernel_size"),
        ({"__config__": encode_json({"depth": 4})}, (), "unknown key 'depth'"),
        ({"__config__": encode_json({"conv_channels": "abc"})}, (), "not a valid architecture"),
        ({"__config__": np.arange(3)}, (), "'__config__' must be a JSON string"),
        ({"__dtype__": encode_json("int8")}, (), "'__dtype__' must be float32 or float64"),
        ({"__seed__": encode_json(-1)}, (), "'__seed__' must be a non-negative int"),
        ({"features.0.weight": np.zeros((4, 1, 3))}, (), r"shape mismatch for 'features\.0\.weight'"),
        ({"features.1.running_var": np.zeros(4, dtype="<U3")}, (), "has dtype <U3"),
        ({"features.7.weight": np.zeros(2)}, (), r"unexpected key 'features\.7\.weight'"),
        ({}, ("classifier.5.bias",), r"missing key 'classifier\.5\.bias'"),
    ],
)
def test_mutated_members_raise_a_clear_error_naming_the_file(saved, tmp_path, change, drop, match) -> None:
    path = rewrite(saved[1], tmp_path / "mutated.npz", change, drop)
    with pytest.raises(CheckpointError, match=match) as info:
        CNN.load(path)
    assert str(info.value).startswith(f"{path}: ")


def test_a_pickled_member_is_refused_and_never_unpickled(saved, tmp_path) -> None:
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.npz"
    members = dict(read_npz(saved[1]))
    members["features.0.weight"] = np.array([Payload()], dtype=object)
    np.savez(path, **members)  # np.savez pickles object arrays; our loader must not unpickle them
    with pytest.raises(CheckpointError, match="object array"):
        CNN.load(path)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ fuzzing
def _only_checkpoint_errors(path) -> str:
    """Load ``path``; return "ok" or "error". Anything but CheckpointError fails the test."""
    try:
        CNN.load(path)
    except CheckpointError as exc:
        assert str(exc).startswith(str(path)), exc
        return "error"
    return "ok"


def test_fuzz_random_bytes_only_raise_checkpoint_errors(tmp_path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "fuzz.npz"
    for _ in range(150):
        size = int(rng.integers(0, 4000))
        content = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        if rng.random() < 0.5:  # a zip signature in front gets the bytes past the first check
            content = b"PK\x03\x04" + content
        path.write_bytes(content)
        assert _only_checkpoint_errors(path) == "error"


def test_fuzz_flipped_bytes_of_a_real_checkpoint_only_raise_checkpoint_errors(saved, tmp_path) -> None:
    data = bytearray(open(saved[1], "rb").read())
    rng = np.random.default_rng(1)
    path = tmp_path / "flipped.npz"
    outcomes = []
    for _ in range(300):
        mutated = bytearray(data)
        for pos in rng.integers(0, len(data), int(rng.integers(1, 4))):
            mutated[pos] ^= int(rng.integers(1, 256))
        path.write_bytes(bytes(mutated))
        outcomes.append(_only_checkpoint_errors(path))
    # Most flips land in CRC-protected data; a flip in an unused zip header field may load fine.
    assert outcomes.count("error") > 250


def test_fuzz_mutated_npy_headers_only_raise_checkpoint_errors(saved, tmp_path) -> None:
    """Rewrite each member's .npy header (shape, dtype, order) with plausible garbage, CRCs kept valid."""
    rng = np.random.default_rng(2)
    src = read_npz(saved[1])
    path = tmp_path / "headers.npz"
    descrs = ["<f4", "<f8", "|u1", "<i8", "<U5", "|O", "<c16", ">f4", "|b1", "<f2"]
    for trial in range(120):
        victim = sorted(src)[trial % len(src)]
        with zipfile.ZipFile(path, "w") as zf:
            for k, v in src.items():
                buf = io.BytesIO()
                np.lib.format.write_array(buf, v, allow_pickle=False)
                raw = buf.getvalue()
                if k == victim:
                    shape = tuple(
                        int(s) for s in rng.integers(0, 2**31 if trial % 3 == 0 else 9, rng.integers(0, 4))
                    )
                    header = {
                        "descr": descrs[trial % len(descrs)],
                        "fortran_order": bool(trial % 2),
                        "shape": shape,
                    }
                    hbuf = io.BytesIO()
                    np.lib.format.write_array_header_1_0(hbuf, header)
                    raw = hbuf.getvalue() + raw[len(raw) - v.nbytes :]
                zf.writestr(f"{k}.npy", raw)
        assert _only_checkpoint_errors(path) == "error"


def test_write_then_read_survives_unusual_but_valid_member_layouts(tmp_path) -> None:
    """Fortran-ordered and version-2.0 .npy members (valid files from other writers) load correctly."""
    model = moved(CNN(**TINY))
    assert_every_array_differs_from_a_fresh_model(model)
    path = model.save(tmp_path / "m.npz")
    members = read_npz(path)
    w = members["classifier.1.weight"]
    with zipfile.ZipFile(tmp_path / "f.npz", "w") as zf:
        for k, v in members.items():
            buf = io.BytesIO()
            if k == "classifier.1.weight":
                np.lib.format.write_array(buf, np.asfortranarray(v), version=(2, 0))
            else:
                np.lib.format.write_array(buf, v)
            zf.writestr(f"{k}.npy", buf.getvalue())
    loaded = CNN.load(tmp_path / "f.npz").state_dict()
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(loaded[k], v, err_msg=k)
    np.testing.assert_array_equal(loaded["classifier.1.weight"], w)
    write_npz_atomic(tmp_path / "again.npz", members)  # and what we read can be written back
