"""Checkpoint files without pickle (cnn.checkpoint): the atomic ``.npz`` writer, the guarded reader,
JSON members, format tags, nested optimizer/scheduler state and RNG state."""

from __future__ import annotations

import json
import math
import os
import zipfile

import numpy as np
import pytest

from cnn.checkpoint import (
    check_format,
    decode_json,
    encode_json,
    format_members,
    pack_state,
    read_npz,
    rng_state,
    set_rng_state,
    unpack_state,
    write_npz_atomic,
)
from cnn.errors import CheckpointError


# ---------------------------------------------------------------------------------- checkpoint files
def test_write_npz_atomic_round_trips_and_leaves_no_temporary(tmp_path) -> None:
    path = tmp_path / "sub" / "ck.npz"
    members = {**format_members(), "w": np.arange(6.0).reshape(2, 3), "n": np.array(3, dtype=np.int64)}
    assert write_npz_atomic(path, members) == path
    back = read_npz(path)
    assert set(back) == set(members)
    np.testing.assert_array_equal(back["w"], members["w"])
    assert check_format(back, path) == 1
    assert os.listdir(path.parent) == ["ck.npz"]


@pytest.mark.parametrize("failure", ["during the write", "at the rename", "on Ctrl-C"])
def test_a_failed_write_keeps_the_previous_file_and_removes_the_temporary(
    tmp_path, monkeypatch, failure
) -> None:
    path = tmp_path / "ck.npz"
    write_npz_atomic(path, {"a": np.ones(3)})
    before = path.read_bytes()
    real_savez = np.savez

    def half_written(f, **arrays):
        real_savez(f, **arrays)
        f.truncate(100)  # the disk filled up half-way
        raise OSError(28, "No space left on device")

    def interrupted(f, **arrays):
        f.write(b"PK partial")
        raise KeyboardInterrupt

    def failed_rename(src, dst):
        raise PermissionError(13, "Permission denied")

    if failure == "during the write":
        monkeypatch.setattr(np, "savez", half_written)
    elif failure == "on Ctrl-C":
        monkeypatch.setattr(np, "savez", interrupted)
    else:
        monkeypatch.setattr(os, "replace", failed_rename)
    with pytest.raises((OSError, KeyboardInterrupt)):
        write_npz_atomic(path, {"a": np.zeros(3), "b": np.arange(1000)})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ck.npz"]


def test_write_refuses_object_arrays_and_other_suffixes(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="would need pickle"):
        write_npz_atomic(tmp_path / "x.npz", {"o": np.array([{}], dtype=object)})
    with pytest.raises(CheckpointError, match=r"must end in \.npz"):
        write_npz_atomic(tmp_path / "x.pt", {"a": np.ones(1)})


def test_read_npz_refuses_pickled_members_without_unpickling_them(tmp_path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.npz"
    np.savez(path, x=np.array([Payload()], dtype=object))
    with pytest.raises(CheckpointError, match="object array"):
        read_npz(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "no such checkpoint file"),
        (b"", "not a readable .npz"),
        (b"hello, this is text\n", "not a readable .npz"),
    ],
)
def test_read_npz_names_the_file_for_missing_and_non_zip_files(tmp_path, content, match) -> None:
    path = tmp_path / "bad.npz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match) as info:
        read_npz(path)
    assert str(path) in str(info.value)


def test_read_npz_detects_a_member_whose_header_does_not_match_its_size(tmp_path) -> None:
    path = tmp_path / "lying.npz"
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1000, 1000)))
    with zipfile.ZipFile(path, "w") as zf, zf.open("w.npy", "w") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(b"\0" * 64)  # claims 8 MB, holds 64 bytes
    with pytest.raises(CheckpointError, match=r"member 'w.npy'.*\(1000, 1000\)"):
        read_npz(path)


def test_read_npz_refuses_members_that_would_decompress_to_gigabytes(tmp_path) -> None:
    path = tmp_path / "bomb.npz"
    big = np.zeros(50_000_000, dtype=np.uint8)  # 50 MB of zeros deflate to ~50 kB
    np.savez_compressed(path, x=big)
    assert path.stat().st_size < 200_000
    with pytest.raises(CheckpointError, match="zip bomb"):
        read_npz(path)
    np.savez_compressed(path, w=np.random.default_rng(0).standard_normal((300, 300)))
    assert read_npz(path)["w"].shape == (300, 300)  # ordinary compressed checkpoints load


def test_json_members_decode_or_name_the_key(tmp_path) -> None:
    members = {"j": encode_json({"a": [1, 2.5, None], "b": math.inf}), "s": np.arange(3), "t": np.array("{")}
    assert decode_json(members, "j", "f.npz") == {"a": [1, 2.5, None], "b": math.inf}
    with pytest.raises(CheckpointError, match=r"f.npz: not a cnn checkpoint \(missing key 'k'\)"):
        decode_json(members, "k", "f.npz")
    with pytest.raises(CheckpointError, match="'s' must be a JSON string"):
        decode_json(members, "s", "f.npz")
    with pytest.raises(CheckpointError, match="'t' is not valid JSON"):
        decode_json(members, "t", "f.npz")


def test_check_format_rejects_other_formats_and_future_versions() -> None:
    with pytest.raises(CheckpointError, match="__format__ is 'keras'"):
        check_format({"__format__": encode_json("keras"), "__version__": encode_json(1)}, "f.npz")
    with pytest.raises(CheckpointError, match="version 99 is not supported"):
        check_format({**format_members(), "__version__": encode_json(99)}, "f.npz")


def test_pack_state_round_trips_nested_state_through_an_npz(tmp_path) -> None:
    state = {
        "lr": np.float32(0.5),
        "step": np.int64(7),
        "betas": (0.9, 0.999),
        "state": {0: {"exp_avg": np.arange(4.0)}, 1: {"exp_avg": np.ones((2, 2), np.float32)}},
        "groups": [{"params": [0, 1], "nesterov": False, "name": None}],
        "__array__": "a key that looks like a tag",
    }
    tree, arrays = pack_state(state, "optimizer/")
    assert set(arrays) == {"optimizer/0", "optimizer/1"}
    state["state"][0]["exp_avg"][0] = 99.0  # packing copied the arrays
    path = write_npz_atomic(tmp_path / "s.npz", {"tree": encode_json(tree), **arrays})
    members = read_npz(path)
    back = unpack_state(decode_json(members, "tree", path), members, path)
    assert back["lr"] == 0.5 and type(back["lr"]) is float and back["step"] == 7
    assert back["betas"] == (0.9, 0.999)
    np.testing.assert_array_equal(back["state"][0]["exp_avg"], np.arange(4.0))
    assert back["state"][1]["exp_avg"].dtype == np.float32
    assert back["groups"] == [{"params": [0, 1], "nesterov": False, "name": None}]
    assert back["__array__"] == "a key that looks like a tag"
    with pytest.raises(CheckpointError, match="'optimizer/0', which is missing"):
        unpack_state(tree, {}, path)
    with pytest.raises(TypeError, match="cannot store a set"):
        pack_state({"s": {1, 2}}, "p/")


def test_rng_state_round_trips_through_json_and_rejects_garbage() -> None:
    gen = np.random.default_rng(123)
    gen.random(5)
    saved = json.loads(json.dumps(rng_state(gen)))
    expected = gen.random(4)
    other = np.random.default_rng(0)
    set_rng_state(other, saved)
    np.testing.assert_array_equal(other.random(4), expected)
    with pytest.raises(CheckpointError, match="cannot restore dropout rng"):
        set_rng_state(other, {"bit_generator": "MT19937", "state": {}}, what="dropout rng")
