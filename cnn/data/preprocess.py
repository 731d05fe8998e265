"""From the four IDX files to normalised, stratified train / validation / test splits.

Splits (deterministic given ``seed``; every subset stratified by class):

* ``val``   -- ``val_size`` images carved from the 60,000 training images;
* ``train`` -- ``train_size`` images from the training images *not* in ``val`` (``None`` = all of them);
* ``test``  -- ``test_size`` images from the 10,000 test images (``None`` = all of them).

Normalisation, with statistics from the **training subset only** (so nothing of val/test leaks in)::

    p = pixel / 255                       (uint8 -> [0, 1])
    mean = E[p],  std = sqrt(E[(p - mean)^2])   over every pixel of every training-subset image
    x = (p - mean) / std                  float32, shape (N, 1, H, W)

For full MNIST ``mean = 0.1307``, ``std = 0.3081``, the constants torchvision examples hard-code.
The statistics are computed exactly from the 256-bin pixel histogram and applied through a 256-entry
lookup table, so no float64 copy of the images is ever made: full MNIST takes about a second and a
peak of ~0.4 GB (see the README).

On disk, ``<processed_dir>/{train,val,test}.npz`` (uncompressed, keys ``x`` float32 ``(N, 1, H, W)`` and
``y`` int64 ``(N,)``; read back with :func:`load_split`) and ``stats.json``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnn.atomic import atomic_open, atomic_write_bytes
from cnn.data.datasets import (
    IDX_FILES,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    DatasetSpec,
    get_dataset,
)
from cnn.data.fetch import read_manifest, verify_dataset_dir
from cnn.data.idx import read_idx_images, read_idx_labels
from cnn.data.sources import local_candidates
from cnn.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")
STATS = "stats.json"
_HIST_CHUNK = 1 << 22  # pixels per bincount call: bounds its int64 temporary to 32 MB


@dataclass(frozen=True)
class RawDataset:
    """The four IDX arrays: images uint8 ``(N, H, W)``, labels uint8 ``(N,)``."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


@dataclass(frozen=True)
class Split:
    """One processed split: ``x`` float32 ``(N, 1, H, W)`` normalised, ``y`` int64 ``(N,)``, and the
    indices ``index`` int64 ``(N,)`` of its images in the original IDX file (ascending)."""

    x: np.ndarray
    y: np.ndarray
    index: np.ndarray


def read_idx_dir(directory: str | Path, num_classes: int | None = 10) -> RawDataset:
    """Read and cross-check the four IDX files in ``directory`` (plain or ``.gz``, Kaggle spellings too;
    see :func:`cnn.data.sources.local_candidates`).

    Checks, each a :class:`DataError` naming the file: magic numbers, exact byte counts, labels in
    ``[0, num_classes)``, as many labels as images, the same image size in train and test.
    """
    directory = Path(directory)
    paths: dict[str, Path] = {}
    for name in IDX_FILES:
        found = local_candidates(directory, name)
        if not found:
            raise DataError(f"{directory / name}: not found (nor .gz, nor Kaggle's spelling)")
        paths[name] = found[0]
    raw = RawDataset(
        train_images=read_idx_images(paths[TRAIN_IMAGES]),
        train_labels=read_idx_labels(paths[TRAIN_LABELS], num_classes),
        test_images=read_idx_images(paths[TEST_IMAGES]),
        test_labels=read_idx_labels(paths[TEST_LABELS], num_classes),
    )
    for images, labels, image_file, label_file in (
        (raw.train_images, raw.train_labels, TRAIN_IMAGES, TRAIN_LABELS),
        (raw.test_images, raw.test_labels, TEST_IMAGES, TEST_LABELS),
    ):
        if len(images) != len(labels):
            raise DataError(
                f"{paths[label_file]}: {len(labels)} labels, "
                f"but {paths[image_file]} holds {len(images)} images"
            )
    if raw.train_images.shape[1:] != raw.test_images.shape[1:]:
        raise DataError(
            f"{paths[TEST_IMAGES]}: images are {raw.test_images.shape[1:]}, "
            f"but the training images are {raw.train_images.shape[1:]}"
        )
    return raw


def stratified_split(
    labels: np.ndarray, sizes: Sequence[int | None], rng: np.random.Generator
) -> list[np.ndarray]:
    """Disjoint, class-stratified random subsets of ``range(len(labels))``.

    Subsets are carved one after the other from what the previous ones left. Subset ``k`` of size
    ``s_k`` drawn from a pool with ``r_c`` images of class ``c`` (``R`` in all) takes ``q_c`` images of
    class ``c``, where ``q_c`` is ``s_k * r_c / R`` rounded by the largest-remainder method (ties to the
    lower class): the ``q_c`` add up to ``s_k`` exactly and each is within 1 of its exact share. The
    ``q_c`` images are the first ones of class ``c`` in one random permutation of the pool.

    Args:
        labels: int ``(N,)``.
        sizes: one size per subset; ``None`` takes the whole remaining pool.
        rng: the only source of randomness (same generator state -> same subsets).

    Returns:
        One ascending int64 index array per size.

    Raises:
        ValueError: a size is negative or larger than what is left.
    """
    labels = np.asarray(labels)
    pool = rng.permutation(len(labels))
    subsets: list[np.ndarray] = []
    for size in sizes:
        if size is None:
            subsets.append(np.sort(pool))
            pool = pool[:0]
            continue
        if not 0 <= size <= len(pool):
            raise ValueError(f"subset size {size} is not within 0..{len(pool)} (the images left)")
        pool_labels = labels[pool]
        classes, counts = np.unique(pool_labels, return_counts=True)
        exact = size * counts / max(len(pool), 1)
        quota = np.floor(exact).astype(np.int64)
        short = size - int(quota.sum())
        # Largest remainders first; a stable sort keeps the lower class first on ties.
        quota[np.argsort(-(exact - quota), kind="stable")[:short]] += 1
        take = np.zeros(len(pool), dtype=bool)
        for cls, q in zip(classes, quota):
            take[np.flatnonzero(pool_labels == cls)[:q]] = True
        subsets.append(np.sort(pool[take]))
        pool = pool[~take]
    return subsets


def pixel_stats(images: np.ndarray) -> tuple[float, float]:
    """Mean and (population) standard deviation of ``images / 255`` over all pixels, exact in float64.

    ``images`` is uint8 of any shape. Computed from the 256-bin histogram ``h``:
    ``mean = sum_v h_v v / (255 n)``, ``var = sum_v h_v (v/255 - mean)^2 / n``.
    """
    if images.dtype != np.uint8:
        raise DataError(f"pixel statistics need uint8 images, found {images.dtype}")
    flat = images.reshape(-1)
    if flat.size == 0:
        raise DataError("pixel statistics need at least one image, found none")
    hist = np.zeros(256, dtype=np.int64)
    for start in range(0, flat.size, _HIST_CHUNK):
        hist += np.bincount(flat[start : start + _HIST_CHUNK], minlength=256)
    values = np.arange(256, dtype=np.float64) / 255.0
    n = float(flat.size)
    mean = float(hist @ values) / n
    var = float(hist @ (values - mean) ** 2) / n
    return mean, float(np.sqrt(var))


def normalize_images(images: np.ndarray, mean: float, std: float) -> np.ndarray:
    """``((images / 255) - mean) / std`` as float32 ``(N, 1, H, W)`` from uint8 ``(N, H, W)``.

    Uses a 256-entry float32 lookup table (computed in float64), so the result equals the float64
    formula rounded once to float32 and no larger temporary is made.
    """
    if std <= 0:
        raise DataError(f"cannot normalise with std={std}: the training images are all one value")
    table = ((np.arange(256, dtype=np.float64) / 255.0 - mean) / std).astype(np.float32)
    return table[images][:, None, :, :]


def preprocess_raw(
    raw: RawDataset,
    train_size: int | None,
    val_size: int,
    test_size: int | None = None,
    seed: int = 0,
    num_classes: int | None = None,
) -> tuple[dict[str, Split], dict[str, Any]]:
    """Split and normalise ``raw`` (see the module docstring).

    Returns:
        ``({"train": Split, "val": Split, "test": Split}, stats)`` where ``stats`` holds ``mean``,
        ``std``, ``seed``, ``sizes`` and ``class_counts`` (per split, a list indexed by label).

    Raises:
        ConfigError: a size is not a non-negative int, or larger than the data (naming ``data.<key>``).

    ``num_classes`` sets the length of the ``class_counts`` lists (default: largest label + 1).
    """
    n_train, n_test = len(raw.train_labels), len(raw.test_labels)
    _check_size("data.val_size", val_size, n_train, f"the {n_train} training images")
    left = n_train - val_size
    if train_size is not None:
        _check_size(
            "data.train_size",
            train_size,
            left,
            f"the {left} training images left after data.val_size={val_size}",
        )
        if train_size == 0:
            raise ConfigError("data.train_size=0: the training subset needs at least one image")
    elif left == 0:
        raise ConfigError(f"data.val_size={val_size} leaves no training images")
    if test_size is not None:
        _check_size("data.test_size", test_size, n_test, f"the {n_test} test images")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"data.seed must be an integer, found {seed!r}")

    rng = np.random.default_rng(int(seed))
    val_idx, train_idx = stratified_split(raw.train_labels, [val_size, train_size], rng)
    (test_idx,) = stratified_split(raw.test_labels, [test_size], rng)

    train_images = raw.train_images[train_idx]
    mean, std = pixel_stats(train_images)
    if num_classes is None:
        num_classes = int(max(raw.train_labels.max(initial=0), raw.test_labels.max(initial=0))) + 1
    splits: dict[str, Split] = {}
    for split, images, labels, idx in (
        ("train", train_images, raw.train_labels, train_idx),
        ("val", raw.train_images[val_idx], raw.train_labels, val_idx),
        ("test", raw.test_images[test_idx], raw.test_labels, test_idx),
    ):
        splits[split] = Split(
            x=normalize_images(images, mean, std), y=labels[idx].astype(np.int64), index=idx.astype(np.int64)
        )
    stats = {
        "mean": mean,
        "std": std,
        "normalization": "x = (pixel / 255 - mean) / std",
        "seed": int(seed),
        "sizes": {split: len(s.y) for split, s in splits.items()},
        "class_counts": {
            split: np.bincount(s.y, minlength=num_classes).tolist() for split, s in splits.items()
        },
    }
    return splits, stats


def _check_size(key: str, value: Any, limit: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(
            f"{key} must be a non-negative integer{' or null' if key != 'data.val_size' else ''}, "
            f"found {value!r}"
        )
    if value < 0:
        raise ConfigError(f"{key}={value} is negative; expected 0..{limit}")
    if value > limit:
        raise ConfigError(f"{key}={value} is larger than {what}; expected at most {limit}")


def save_split(path: str | Path, x: np.ndarray, y: np.ndarray) -> Path:
    """Write ``x`` and ``y`` to an uncompressed ``.npz``, atomically (temporary file, fsync, rename)."""
    with atomic_open(path) as fh:
        np.savez(fh, x=x, y=y)
    return Path(path)


def load_split(
    path: str | Path,
    sample_shape: tuple[int, ...] | None = (1, 28, 28),
    num_classes: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Load one processed split written by :func:`save_split`, without pickle, and validate it.

    Args:
        path: a ``{train,val,test}.npz``.
        sample_shape: the required shape of one image, ``(C, H, W)``; ``None`` accepts any 3-d shape.
        num_classes: if given, every label must lie in ``[0, num_classes)``.

    Returns:
        ``(x, y)``: ``x`` float32 ``(N, *sample_shape)``, ``y`` int64 ``(N,)``.

    Raises:
        DataError: the file is missing, not an npz, holds objects (pickle), lacks ``x`` or ``y``, or has
            the wrong dtype, shape, length or label range -- naming the file, expected and found.
    """
    from cnn.checkpoint import read_npz  # its member reader checks each header before reading the data

    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder; expected an .npz file with arrays x and y")
    try:
        with path.open("rb") as fh:
            head = fh.read(6)
    except FileNotFoundError:
        raise DataError(f"{path}: not found; run `python -m stages.preprocess` first") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if head == b"\x93NUMPY":
        raise DataError(f"{path}: expected an .npz archive with arrays x and y, found a single .npy array")
    if head[:4] not in (b"PK\x03\x04", b"PK\x05\x06"):
        raise DataError(f"{path}: not a valid .npz split: not a zip archive (starts with {head[:4]!r})")
    arrays = read_npz(path, what="split", error=DataError)
    if not {"x", "y"} <= set(arrays):
        raise DataError(f"{path}: expected arrays x and y, found {sorted(arrays) or 'none'}")
    x, y = arrays["x"], arrays["y"]
    if x.dtype != np.float32:
        raise DataError(f"{path}: x must be float32, found {x.dtype}")
    if y.dtype != np.int64:
        raise DataError(f"{path}: y must be int64, found {y.dtype}")
    if x.ndim != 4 or (sample_shape is not None and tuple(x.shape[1:]) != tuple(sample_shape)):
        want = f"(N, {', '.join(map(str, sample_shape))})" if sample_shape is not None else "(N, C, H, W)"
        raise DataError(f"{path}: x must have shape {want}, found {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{path}: y must have shape ({len(x)},) to match x, found {y.shape}")
    if y.size and (int(y.min()) < 0 or (num_classes is not None and int(y.max()) >= num_classes)):
        bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
        top = f"{num_classes - 1}" if num_classes is not None else "..."
        raise DataError(f"{path}: label {bad} out of range; expected 0..{top}")
    return x, y


def preprocess_dataset(
    name: str | DatasetSpec,
    raw_dir: str | Path = "data/raw",
    processed_dir: str | Path = "data/processed",
    *,
    train_size: int | None = 5000,
    val_size: int = 1000,
    test_size: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The preprocess stage's library call: verify ``<raw_dir>/<name>/`` against the pinned digests,
    split and normalise it, write ``{train,val,test}.npz`` and ``stats.json`` to ``processed_dir``.

    Returns the content written to ``stats.json``: ``dataset``, ``mean``, ``std``, ``normalization``,
    ``seed``, ``sizes``, ``class_counts``, ``requested`` (the three sizes as asked, ``None`` = all),
    ``source_digests`` (file -> SHA-256), ``sources`` (from the manifest), ``shape`` (of one image,
    ``[1, H, W]``).

    Raises:
        DataError: ``processed_dir`` (or a file it should hold) is occupied by something of the wrong
            kind -- checked before any raw file is read; the raw files fail their checks.
    """
    spec = get_dataset(name)
    out = Path(processed_dir)
    check_output_dir(out, [f"{split}.npz" for split in SPLITS] + [STATS])
    directory = Path(raw_dir) / spec.name
    digests = verify_dataset_dir(directory, spec)
    raw = read_idx_dir(directory, spec.num_classes)
    splits, stats = preprocess_raw(raw, train_size, val_size, test_size, seed, spec.num_classes)
    del raw
    manifest = read_manifest(directory) or {}
    stats = {
        "dataset": spec.name,
        **stats,
        # The sizes as asked (None = all), so a reader can tell whether these splits are the ones a
        # config asks for (cnn.pipeline.splits.ensure_splits) without the raw data.
        "requested": {"train_size": train_size, "val_size": val_size, "test_size": test_size},
        "shape": [1, *splits["train"].x.shape[2:]],
        "source_digests": digests,
        "sources": manifest.get("sources", []),
    }
    # stats.json goes last and marks the splits complete: a run stopped half-way leaves none.
    (out / STATS).unlink(missing_ok=True)
    for split in SPLITS:
        save_split(out / f"{split}.npz", splits[split].x, splits[split].y)
    atomic_write_bytes(out / STATS, (json.dumps(stats, indent=2) + "\n").encode())
    return stats


def check_output_dir(directory: Path, files: Sequence[str] = ()) -> None:
    """Raise :class:`DataError` when ``directory`` exists but is not a folder, or one of the ``files`` to
    be written in it exists but is not a file (a folder, say): the writes would fail half-way."""
    if directory.exists() and not directory.is_dir():
        raise DataError(f"{directory}: exists but is not a folder; expected a folder for the splits")
    for name in files:
        path = directory / name
        if path.exists() and not path.is_file():
            raise DataError(f"{path}: exists but is not a file; remove it (the preprocess stage writes it)")


def load_mnist(
    path: str | Path,
    subset_size: tuple[int | None, int | None] | None = None,
    seed: int = 0,
    standardize: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load MNIST (or Fashion-MNIST) from a folder of IDX files, as in the seed project's README::

        X_train, y_train, X_test, y_test = load_mnist("mnist_dataset", subset_size=(5000, 1000))

    Args:
        path: a folder with the four IDX files, plain or ``.gz`` (Kaggle's spellings accepted).
        subset_size: ``(n_train, n_test)``; class-stratified random subsets drawn with ``seed``;
            ``None`` (or a ``None`` entry) keeps every image.
        seed: seed of the subset draw.
        standardize: ``False`` scales pixels to ``[0, 1]`` (``x = pixel / 255``); ``True`` standardises
            with the mean and std of the returned training images, like the preprocess stage.

    Returns:
        ``X_train`` float32 ``(n_train, 1, 28, 28)``, ``y_train`` int64 ``(n_train,)``, ``X_test``,
        ``y_test`` likewise.
    """
    raw = read_idx_dir(path)
    n_train, n_test = subset_size if subset_size is not None else (None, None)
    for key, value, limit in (
        ("n_train", n_train, len(raw.train_labels)),
        ("n_test", n_test, len(raw.test_labels)),
    ):
        if value is not None:
            _check_size(f"subset_size {key}", value, limit, f"the {limit} images in {path}")
    rng = np.random.default_rng(seed)
    (train_idx,) = stratified_split(raw.train_labels, [n_train], rng)
    (test_idx,) = stratified_split(raw.test_labels, [n_test], rng)
    train_images, test_images = raw.train_images[train_idx], raw.test_images[test_idx]
    mean, std = pixel_stats(train_images) if standardize else (0.0, 1.0)
    return (
        normalize_images(train_images, mean, std),
        raw.train_labels[train_idx].astype(np.int64),
        normalize_images(test_images, mean, std),
        raw.test_labels[test_idx].astype(np.int64),
    )
