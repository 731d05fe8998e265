"""The IDX parser and writer: round trips, every malformed-file case, and a fuzz test."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from cnn.data.idx import (
    IMAGES_MAGIC,
    LABELS_MAGIC,
    idx_magic,
    parse_idx,
    read_idx,
    read_idx_images,
    read_idx_labels,
    write_idx,
)
from cnn.errors import DataError


def idx_bytes(array: np.ndarray) -> bytes:
    """Reference IDX encoder, written from the format description (independent of ``write_idx``)."""
    codes = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}
    code = codes[array.dtype.str[1:]]
    header = bytes([0, 0, code, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.fixture
def images(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)


@pytest.fixture
def labels(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 10, size=7, dtype=np.uint8)


def test_magic_numbers_match_the_mnist_spec() -> None:
    assert idx_magic(np.uint8, 3) == IMAGES_MAGIC == 2051
    assert idx_magic(np.uint8, 1) == LABELS_MAGIC == 2049


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 4), (0, 28, 28)])
def test_write_then_read_round_trips_every_idx_dtype(
    tmp_path: Path, rng: np.random.Generator, dtype: type, shape: tuple[int, ...]
) -> None:
    array = (rng.standard_normal(shape) * 100).astype(dtype)
    path = write_idx(tmp_path / "a-idx", array)
    assert path.read_bytes() == idx_bytes(array)  # the writer emits exactly the spec's bytes
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    np.testing.assert_array_equal(back, array)
    back[...] = 0  # the array is writable


def test_gzip_compressed_file_reads_like_the_plain_one(tmp_path: Path, images: np.ndarray) -> None:
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(images)))
    np.testing.assert_array_equal(read_idx_images(path), images)


def test_image_and_label_readers_check_the_magic(
    tmp_path: Path, images: np.ndarray, labels: np.ndarray
) -> None:
    img, lab = write_idx(tmp_path / "img", images), write_idx(tmp_path / "lab", labels)
    np.testing.assert_array_equal(read_idx_labels(lab, num_classes=10), labels)
    with pytest.raises(DataError, match=r"img: expected a label file \(IDX magic 2049\), found magic 2051"):
        read_idx_labels(img)
    with pytest.raises(DataError, match=r"lab: expected an image file \(IDX magic 2051\), found magic 2049"):
        read_idx_images(lab)
    floats = write_idx(tmp_path / "float", images.astype(np.float32))
    with pytest.raises(DataError, match="found magic 3331"):
        read_idx_images(floats)


def test_label_out_of_range_names_file_value_and_index(tmp_path: Path, labels: np.ndarray) -> None:
    labels = labels.copy()
    labels[4] = 10
    path = write_idx(tmp_path / "labels", labels)
    with pytest.raises(DataError, match=r"labels: label 10 at index 4 is out of range; expected 0\.\.9"):
        read_idx_labels(path, num_classes=10)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b"", r"expected a 4-byte magic number, found 0 bytes"),
        (lambda b: b[:3], r"found 3 bytes"),
        (lambda b: b"\x01" + b[1:], r"not an IDX file: expected magic .* found 16779267 \(0x01000803\)"),
        (lambda b: b"PK\x03\x04" + b[4:], r"not an IDX file"),
        (lambda b: b[:2] + b"\x07" + b[3:], r"unknown IDX element type 0x07"),
        (lambda b: b[:3] + b"\x00" + b[4:], r"declares 0 dimensions"),
        (lambda b: b[:10], r"truncated IDX header: 3 dimensions need 16 header bytes, found 10"),
        (lambda b: b[:-1], r"truncated: header \(7, 28, 28\) of uint8 needs 5504 bytes, found 5503"),
        (lambda b: b + b"\x00", r"trailing bytes after the data: .* needs 5504 bytes, found 5505"),
        (lambda b: b[:4] + (8).to_bytes(4, "big") + b[8:], r"truncated: header \(8, 28, 28\)"),
        (lambda b: b[:4] + b"\xff\xff\xff\xff" * 3 + b[16:], r"truncated: header \(4294967295, "),
    ],
    ids=[
        "empty",
        "short",
        "bad-magic",
        "zip-file",
        "unknown-type",
        "zero-dims",
        "truncated-header",
        "truncated-data",
        "trailing-bytes",
        "count-mismatch",
        "huge-dims",
    ],
)
def test_malformed_image_file_raises_data_error_naming_file_expected_and_found(
    tmp_path: Path, images: np.ndarray, mutate, message: str
) -> None:
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(mutate(idx_bytes(images)))
    with pytest.raises(DataError, match=message) as info:
        read_idx_images(path)
    assert str(path) in str(info.value)


def test_missing_file_and_corrupt_gzip_are_data_errors(tmp_path: Path, images: np.ndarray) -> None:
    with pytest.raises(DataError, match=r"nope: IDX file not found"):
        read_idx(tmp_path / "nope")
    truncated = tmp_path / "cut.gz"
    truncated.write_bytes(gzip.compress(idx_bytes(images))[:-20])
    with pytest.raises(DataError, match=r"cut.gz: cannot read"):
        read_idx(truncated)


def test_decompression_bomb_is_refused_at_its_header_before_the_rest_is_inflated(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.gz"
    bomb.write_bytes(gzip.compress(b"\x00" * 2_000_000))  # magic 0x00000000: no IDX element type
    with pytest.raises(DataError, match=r"bomb\.gz: unknown IDX element type 0x00"):
        read_idx(bomb, max_bytes=1_000_000)
    # A valid header that claims more than max_bytes: refused from the header alone.
    header = (2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (60_000, 280, 280))
    bomb.write_bytes(gzip.compress(header + b"\x00" * 2_000_000))
    with pytest.raises(DataError, match=r"bomb\.gz: header claims 4704000016 bytes, more than the 1000000"):
        read_idx(bomb, max_bytes=1_000_000)


def test_gzip_file_with_a_bad_gzip_or_idx_header_is_one_data_error_naming_it(tmp_path: Path) -> None:
    bad_gzip = tmp_path / "train-images-idx3-ubyte.gz"
    bad_gzip.write_bytes(b"\x1f\x8b\x09" + b"\x00" * 100)  # gzip magic, unknown compression method 9
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: cannot read"):
        read_idx(bad_gzip)
    not_idx = tmp_path / "labels.gz"
    not_idx.write_bytes(gzip.compress(b"<html>404 Not Found</html>" + b" " * 10_000))
    with pytest.raises(DataError, match=r"labels\.gz: not an IDX file: expected magic"):
        read_idx(not_idx)
    trailing = tmp_path / "trailing.gz"
    trailing.write_bytes(gzip.compress((2049).to_bytes(4, "big") + (3).to_bytes(4, "big") + b"\x01" * 10))
    with pytest.raises(DataError, match=r"trailing\.gz: trailing bytes after the data"):
        read_idx(trailing)


def test_write_idx_refuses_unsupported_dtype_and_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="IDX cannot store dtype int64"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64))
    assert list(tmp_path.iterdir()) == []


def _mutations(rng: np.random.Generator, valid: bytes) -> list[bytes]:
    """Random byte strings, and valid files with random header bytes, truncations and appendices."""
    cases: list[bytes] = []
    for _ in range(300):
        cases.append(rng.integers(0, 256, size=int(rng.integers(0, 64)), dtype=np.uint8).tobytes())
    for _ in range(300):  # random but plausible headers: 00 00 <type> <ndim> + random dims + random body
        ndim = int(rng.integers(0, 5))
        code = int(rng.choice([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, int(rng.integers(0, 256))]))
        shape = [int(rng.integers(0, 6)) for _ in range(ndim)]
        dims = b"".join(d.to_bytes(4, "big") for d in shape)
        itemsize = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}.get(code, 1)
        # Half of them with exactly the body the header asks for, so some parse (any bit pattern is valid).
        size = itemsize * int(np.prod(shape)) if rng.random() < 0.5 else int(rng.integers(0, 200))
        body = rng.integers(0, 256, size=size, dtype=np.uint8).tobytes()
        cases.append(bytes([0, 0, code, ndim]) + dims + body)
    for _ in range(400):
        data = bytearray(valid)
        kind = int(rng.integers(0, 4))
        if kind == 0:  # overwrite 1-3 header bytes
            for pos in rng.integers(0, 16, size=int(rng.integers(1, 4))):
                data[int(pos)] = int(rng.integers(0, 256))
        elif kind == 1:  # truncate anywhere
            del data[int(rng.integers(0, len(data))) :]
        elif kind == 2:  # append junk
            data += rng.integers(0, 256, size=int(rng.integers(1, 10)), dtype=np.uint8).tobytes()
        else:  # random dimension word
            pos = 4 + 4 * int(rng.integers(0, 3))
            data[pos : pos + 4] = int(rng.integers(0, 2**32)).to_bytes(4, "big")
        cases.append(bytes(data))
    return cases


def test_fuzzed_bytes_and_headers_raise_only_data_error(tmp_path: Path) -> None:
    """1,000 random and mutated inputs, plain and gzip-wrapped: each parses or raises DataError."""
    rng = np.random.default_rng(1234)
    valid = idx_bytes(rng.integers(0, 256, size=(3, 5, 4), dtype=np.uint8))
    path, parsed, rejected = tmp_path / "fuzz", 0, 0
    for i, case in enumerate(_mutations(rng, valid)):
        if i % 3 == 0:  # also through gzip: intact, or with its own bytes corrupted
            case = gzip.compress(case)
            if i % 2:
                case = case[: int(rng.integers(2, len(case)))]
        path.write_bytes(case)
        for reader in (read_idx, read_idx_images, read_idx_labels):
            try:
                out = reader(path)
            except DataError:
                rejected += 1
            else:
                assert isinstance(out, np.ndarray)
                parsed += 1
        try:
            parse_idx(case)
        except DataError:
            pass
    assert parsed > 0 and rejected > 0  # the corpus exercised both outcomes
