"""The IDX file format of MNIST and Fashion-MNIST: a strict parser and a writer.

An IDX file is a big-endian header followed by the raw array, C order::

    bytes 0-1   0x00 0x00
    byte  2     element type: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64
    byte  3     number of dimensions d (>= 1)
    4 * d       each dimension as a big-endian uint32
    rest        prod(dims) * itemsize bytes of data, big-endian

so the magic number ``int.from_bytes(bytes[0:4], "big")`` is 2051 (0x0803: uint8, 3 dims) for an image
file ``(N, rows, cols)`` and 2049 (0x0801: uint8, 1 dim) for a label file ``(N,)``.

The parser checks every byte count before it touches the data: a truncated, padded, foreign or random
file raises :class:`~cnn.errors.DataError` naming the file, what was expected and what was found, and
never any other exception (the fuzz test in ``tests/test_data_idx.py`` holds it to that). Gzip-compressed
input (``.gz``, recognised by its magic bytes, not its name) is decompressed transparently, up to a size cap
so that a decompression bomb is an error, not an out-of-memory kill.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from cnn.atomic import atomic_write_bytes
from cnn.errors import DataError

IMAGES_MAGIC = 2051
"""Magic number of an IDX image file: uint8 elements, 3 dimensions ``(N, rows, cols)``."""
LABELS_MAGIC = 2049
"""Magic number of an IDX label file: uint8 elements, 1 dimension ``(N,)``."""

# IDX type code -> big-endian NumPy dtype, and back (native dtypes keyed by their kind + size).
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES: dict[tuple[str, int], int] = {(dt.kind, dt.itemsize): code for code, dt in _IDX_DTYPES.items()}

GZIP_MAGIC = b"\x1f\x8b"
DEFAULT_MAX_BYTES = 1 << 30
"""Largest decompressed IDX file accepted (1 GiB; MNIST's largest file is 47,040,016 bytes)."""


def idx_magic(dtype: np.dtype | type, ndim: int) -> int:
    """The magic number of an IDX file holding ``ndim``-dimensional arrays of ``dtype``
    (``idx_magic(np.uint8, 3) == 2051``)."""
    dt = np.dtype(dtype)
    code = _IDX_CODES.get((dt.kind, dt.itemsize))
    if code is None:
        raise DataError(
            f"IDX cannot store dtype {dt}; expected one of uint8, int8, int16, int32, float32, float64"
        )
    if not 1 <= ndim <= 255:
        raise DataError(f"IDX stores 1 to 255 dimensions, found {ndim}")
    return (code << 8) | ndim


def idx_header(
    head: bytes | bytearray | memoryview, source: str = "<bytes>"
) -> tuple[np.dtype, tuple[int, ...], int, int]:
    """Check the header at the start of ``head`` (the file's first bytes; the data may follow).

    Returns:
        ``(dtype, dims, header_bytes, file_bytes)``: the big-endian element type, the dimensions, the
        header's length and the length the whole file must have.

    Raises:
        DataError: not an IDX magic number, an unknown element type, no dimensions, or fewer bytes than
            the header needs.
    """
    view = memoryview(head).cast("B")
    size = view.nbytes
    if size < 4:
        raise DataError(f"{source}: not an IDX file: expected a 4-byte magic number, found {size} bytes")
    if view[0] != 0 or view[1] != 0:
        found = int.from_bytes(view[0:4], "big")
        raise DataError(
            f"{source}: not an IDX file: expected magic 0x0000TTDD (e.g. {IMAGES_MAGIC} images, "
            f"{LABELS_MAGIC} labels), found {found} (0x{found:08x})"
        )
    type_code, ndim = view[2], view[3]
    dtype = _IDX_DTYPES.get(type_code)
    if dtype is None:
        raise DataError(
            f"{source}: unknown IDX element type 0x{type_code:02x}; expected one of "
            + ", ".join(f"0x{c:02x}" for c in _IDX_DTYPES)
        )
    if ndim == 0:
        raise DataError(f"{source}: IDX header declares 0 dimensions; expected at least 1")
    header = 4 + 4 * ndim
    if size < header:
        raise DataError(
            f"{source}: truncated IDX header: {ndim} dimensions need {header} header bytes, found {size}"
        )
    dims = tuple(int.from_bytes(view[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + dtype.itemsize * math.prod(dims)  # Python ints: no overflow
    return dtype, dims, header, expected


def parse_idx(data: bytes | bytearray | memoryview, source: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of one (uncompressed) IDX file.

    Args:
        data: the whole file's content.
        source: what to call the data in error messages (usually the file's path).

    Returns:
        The array, shape ``dims`` from the header, native byte order. For uint8/int8 data it is a view on
        ``data`` (writable exactly when ``data`` is a writable buffer such as a ``bytearray``).

    Raises:
        DataError: the header is not IDX, or the data is not exactly ``prod(dims) * itemsize`` bytes.
    """
    view = memoryview(data).cast("B")
    size = view.nbytes
    dtype, dims, header, expected = idx_header(view, source)
    if size != expected:
        what = "truncated" if size < expected else "trailing bytes after the data"
        raise DataError(
            f"{source}: {what}: header {dims} of {dtype.newbyteorder('=')} needs {expected} bytes, "
            f"found {size}"
        )
    array = np.frombuffer(view, dtype=dtype, offset=header).reshape(dims)
    if dtype.itemsize > 1:
        array = array.astype(dtype.newbyteorder("="))  # big-endian on disk, native in memory
    return array


def read_idx(path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """Read an IDX file, plain or gzip-compressed (detected from its first two bytes).

    Returns a writable array, shape and dtype as declared by the header (see :func:`parse_idx`).
    Raises :class:`DataError` if the file cannot be read, is not valid gzip, decompresses to more than
    ``max_bytes``, or is not a valid IDX file.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            head = fh.read(2)
            fh.seek(0)
            if head == GZIP_MAGIC:
                with gzip.GzipFile(fileobj=fh) as gz:
                    # The header first: a file that is not IDX (or claims more than max_bytes) is refused
                    # before the rest is inflated.
                    content = gz.read(4)
                    if len(content) == 4 and content[:2] == b"\0\0":
                        content += gz.read(4 * content[3])
                    _, _, _, expected = idx_header(content, str(path))
                    if expected > max_bytes:
                        raise DataError(
                            f"{path}: header claims {expected} bytes, more than the {max_bytes} accepted "
                            "for an IDX file"
                        )
                    content += gz.read(expected - len(content) + 1)  # one byte more reveals trailing data
                buffer = bytearray(content)
            else:
                size = os.fstat(fh.fileno()).st_size
                if size > max_bytes:
                    raise DataError(
                        f"{path}: {size} bytes, more than the {max_bytes} accepted for an IDX file"
                    )
                buffer = bytearray(size)
                fh.readinto(buffer)  # one buffer, no second copy: the array is a view on it
    except FileNotFoundError:
        raise DataError(f"{path}: IDX file not found") from None
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read: {exc}") from None
    return parse_idx(buffer, source=str(path))


def read_idx_images(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX image file: magic 2051, uint8 ``(N, rows, cols)`` with ``rows, cols >= 1``."""
    array = read_idx(path)
    _check_magic(path, array, IMAGES_MAGIC, "an image file")
    if min(array.shape[1:]) < 1:
        raise DataError(f"{path}: images must be at least 1x1 pixels, found {array.shape[1:]}")
    return array


def read_idx_labels(path: str | os.PathLike[str], num_classes: int | None = None) -> np.ndarray:
    """Read an IDX label file: magic 2049, uint8 ``(N,)``; with ``num_classes``, every label must lie in
    ``[0, num_classes)``."""
    array = read_idx(path)
    _check_magic(path, array, LABELS_MAGIC, "a label file")
    if num_classes is not None and array.size and int(array.max()) >= num_classes:
        bad = int(np.argmax(array >= num_classes))
        raise DataError(
            f"{path}: label {int(array[bad])} at index {bad} is out of range; expected 0..{num_classes - 1}"
        )
    return array


def _check_magic(path: str | os.PathLike[str], array: np.ndarray, magic: int, what: str) -> None:
    found = idx_magic(array.dtype, array.ndim)
    if found != magic:
        raise DataError(
            f"{path}: expected {what} (IDX magic {magic}), found magic {found} "
            f"({array.dtype}, {array.ndim} dimensions)"
        )


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write ``array`` as an uncompressed IDX file, atomically (temporary file, then rename).

    The dtype must be one IDX can store (uint8, int8, int16, int32, float32, float64); every dimension
    must fit in a uint32. Returns the path written.
    """
    path = Path(path)
    array = np.asarray(array)
    magic = idx_magic(array.dtype, array.ndim)
    if any(d >= 1 << 32 for d in array.shape):
        raise DataError(f"{path}: IDX dimensions must fit in 32 bits, found {array.shape}")
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    body = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder(">"))
    atomic_write_bytes(path, header, body.reshape(-1).view(np.uint8))
    return path
