"""Splits, normalisation and the processed .npz files, on small generated datasets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cnn.data import (
    IDX_FILES,
    RawDataset,
    load_mnist,
    load_split,
    normalize_images,
    pixel_stats,
    preprocess_dataset,
    preprocess_raw,
    save_split,
    stratified_split,
    write_idx,
)
from cnn.errors import ConfigError, DataError
from tests.helpers.raw_data import CLASS_SIZES, make_raw, spec_for, write_raw


@pytest.fixture
def raw(rng: np.random.Generator) -> RawDataset:
    return make_raw(rng)


# --- stratified subsets ------------------------------------------------------------------------------


def test_stratified_subsets_have_exact_sizes_and_proportional_classes(raw: RawDataset) -> None:
    labels = raw.train_labels
    val, train = stratified_split(labels, [100, 300], np.random.default_rng(0))
    assert (len(val), len(train)) == (100, 300)
    for subset, size in ((val, 100), (train, 300)):
        counts = np.bincount(labels[subset], minlength=10)
        assert counts.sum() == size
        # Within one image of the exact share of each class (largest-remainder rounding).
        assert np.all(np.abs(counts - size * CLASS_SIZES / CLASS_SIZES.sum()) < 1.0 + 1e-9)


def test_stratified_subsets_are_disjoint_sorted_and_none_takes_the_rest(raw: RawDataset) -> None:
    val, train = stratified_split(raw.train_labels, [100, None], np.random.default_rng(0))
    assert np.intersect1d(val, train).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([val, train])), np.arange(len(raw.train_labels)))
    assert np.all(np.diff(val) > 0) and np.all(np.diff(train) > 0)
    assert train.dtype == np.int64


def test_stratified_subsets_are_deterministic_given_the_seed(raw: RawDataset) -> None:
    def draw(seed: int) -> list[np.ndarray]:
        return stratified_split(raw.train_labels, [50, 200], np.random.default_rng(seed))

    for a, b in zip(draw(7), draw(7)):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(draw(7)[1], draw(8)[1])


def test_stratified_subset_larger_than_the_pool_is_refused(raw: RawDataset) -> None:
    with pytest.raises(ValueError, match=r"subset size 500 is not within 0\.\.460"):
        stratified_split(raw.train_labels, [100, 500], np.random.default_rng(0))


# --- normalisation -------------------------------------------------------------------------------------


def test_pixel_stats_equal_the_float64_definition(raw: RawDataset) -> None:
    p = raw.train_images.astype(np.float64) / 255
    mean, std = pixel_stats(raw.train_images)
    assert mean == pytest.approx(p.mean(), rel=1e-12)
    assert std == pytest.approx(p.std(), rel=1e-12)


def test_normalize_images_is_the_float64_formula_rounded_once_to_float32(raw: RawDataset) -> None:
    x = normalize_images(raw.test_images, 0.13, 0.31)
    expected = ((raw.test_images.astype(np.float64) / 255 - 0.13) / 0.31).astype(np.float32)
    assert x.dtype == np.float32 and x.shape == (100, 1, 28, 28)
    np.testing.assert_array_equal(x[:, 0], expected)


def test_normalisation_statistics_come_from_the_training_subset_only(raw: RawDataset) -> None:
    splits, stats = preprocess_raw(raw, train_size=200, val_size=100, test_size=50, seed=3)
    train_pixels = raw.train_images[splits["train"].index].astype(np.float64) / 255
    assert stats["mean"] == pytest.approx(train_pixels.mean(), rel=1e-12)
    assert stats["std"] == pytest.approx(train_pixels.std(), rel=1e-12)
    # ... and not from all training images (which include the validation images).
    assert abs(stats["mean"] - raw.train_images.mean() / 255) > 1e-4
    # Every split uses the training statistics.
    val_raw = raw.train_images[splits["val"].index].astype(np.float64) / 255
    np.testing.assert_allclose(splits["val"].x[:, 0], (val_raw - stats["mean"]) / stats["std"], rtol=1e-6)
    x_train = splits["train"].x.astype(np.float64)
    assert abs(x_train.mean()) < 1e-6 and x_train.std() == pytest.approx(1.0, rel=1e-6)


def test_preprocess_raw_builds_disjoint_stratified_splits_with_labels(raw: RawDataset) -> None:
    splits, stats = preprocess_raw(raw, train_size=None, val_size=60, test_size=None, seed=0)
    train, val, test = splits["train"], splits["val"], splits["test"]
    assert np.intersect1d(train.index, val.index).size == 0
    assert len(train.y) + len(val.y) == len(raw.train_labels) and len(test.y) == len(raw.test_labels)
    np.testing.assert_array_equal(train.y, raw.train_labels[train.index])
    np.testing.assert_array_equal(test.y, raw.test_labels)
    assert train.y.dtype == np.int64 and train.x.dtype == np.float32 and train.x.shape[1:] == (1, 28, 28)
    assert stats["sizes"] == {"train": 500, "val": 60, "test": 100}
    assert stats["class_counts"]["val"] == np.bincount(val.y, minlength=10).tolist()
    assert sum(stats["class_counts"]["train"]) == 500


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"train_size": 501}, r"data\.train_size=501 is larger than the 500 training images left after "),
        ({"val_size": 561}, r"data\.val_size=561 is larger than the 560 training images"),
        ({"test_size": 101}, r"data\.test_size=101 is larger than the 100 test images"),
        ({"val_size": -1}, r"data\.val_size=-1 is negative"),
        ({"train_size": 0}, r"data\.train_size=0"),
        ({"train_size": 2.5}, r"data\.train_size must be a non-negative integer or null, found 2\.5"),
        ({"val_size": True}, r"data\.val_size must be a non-negative integer, found True"),
        ({"train_size": None, "val_size": 560}, r"data\.val_size=560 leaves no training images"),
        ({"seed": "0"}, r"data\.seed must be an integer, found '0'"),
    ],
)
def test_impossible_sizes_are_config_errors_naming_the_key(
    raw: RawDataset, kwargs: dict, message: str
) -> None:
    args = {"train_size": 100, "val_size": 60, "test_size": None, "seed": 0} | kwargs
    with pytest.raises(ConfigError, match=message):
        preprocess_raw(raw, **args)


# --- .npz splits ----------------------------------------------------------------------------------------


def test_save_split_then_load_split_round_trips(tmp_path: Path, rng: np.random.Generator) -> None:
    x = rng.standard_normal((5, 1, 28, 28)).astype(np.float32)
    y = np.arange(5, dtype=np.int64)
    path = save_split(tmp_path / "train.npz", x, y)
    x2, y2 = load_split(path, num_classes=10)
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(y2, y)
    assert [p.name for p in tmp_path.iterdir()] == ["train.npz"]  # no temporary left behind


def test_interrupted_save_split_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = save_split(tmp_path / "train.npz", np.zeros((2, 1, 28, 28), np.float32), np.zeros(2, np.int64))
    before = path.read_bytes()

    class Exploding:
        def __array__(self, dtype=None, copy=None):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_split(path, np.ones((3, 1, 28, 28), np.float32), Exploding())  # x is written, then y fails
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["train.npz"]


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (
            {"x": np.zeros((2, 1, 28, 28), np.float64), "y": np.zeros(2, np.int64)},
            r"x must be float32, found float64",
        ),
        (
            {"x": np.zeros((2, 1, 28, 28), np.float32), "y": np.zeros(2, np.int32)},
            r"y must be int64, found int32",
        ),
        (
            {"x": np.zeros((2, 28, 28), np.float32), "y": np.zeros(2, np.int64)},
            r"x must have shape \(N, 1, 28, 28\)",
        ),
        (
            {"x": np.zeros((2, 1, 28, 28), np.float32), "y": np.zeros(3, np.int64)},
            r"y must have shape \(2,\)",
        ),
        ({"x": np.zeros((2, 1, 28, 28), np.float32)}, r"expected arrays x and y, found \['x'\]"),
        ({"x": np.zeros((1, 1, 28, 28), np.float32), "y": np.array([-1])}, r"label -1 out of range"),
        (
            {"x": np.zeros((1, 1, 28, 28), np.float32), "y": np.array([10])},
            r"label 10 out of range; expected 0\.\.9",
        ),
        ({"x": np.array([{"a": 1}], dtype=object), "y": np.zeros(1, np.int64)}, r"not a valid \.npz split"),
    ],
    ids=[
        "x-float64",
        "y-int32",
        "x-3d",
        "length-mismatch",
        "missing-y",
        "negative-label",
        "label-10",
        "pickle",
    ],
)
def test_load_split_rejects_bad_contents_naming_the_file(tmp_path: Path, arrays: dict, message: str) -> None:
    path = _npz(tmp_path / "split.npz", **arrays)
    with pytest.raises(DataError, match=message) as info:
        load_split(path, num_classes=10)
    assert str(path) in str(info.value)


def test_load_split_rejects_missing_foreign_and_damaged_files(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    with pytest.raises(DataError, match=r"nope\.npz: not found; run `python -m stages\.preprocess` first"):
        load_split(tmp_path / "nope.npz")
    npy = tmp_path / "single.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(DataError, match=r"single\.npy: expected an \.npz archive"):
        load_split(npy)
    good = save_split(tmp_path / "good.npz", np.zeros((4, 1, 28, 28), np.float32), np.zeros(4, np.int64))
    data = good.read_bytes()
    bad = tmp_path / "bad.npz"
    # Fuzz: truncations and byte flips anywhere in the archive are DataErrors, never another exception.
    for i in range(200):
        mutated = bytearray(data)
        if i % 2:
            del mutated[int(rng.integers(0, len(mutated))) :]
        else:
            for pos in rng.integers(0, len(mutated), size=int(rng.integers(1, 4))):
                mutated[int(pos)] ^= int(rng.integers(1, 256))
        bad.write_bytes(bytes(mutated))
        try:
            load_split(bad)
        except DataError:
            pass


# --- the whole preprocess call and the seed's load_mnist ------------------------------------------------


def test_preprocess_dataset_writes_loadable_splits_and_stats(tmp_path: Path, raw: RawDataset) -> None:
    write_raw(tmp_path / "raw" / "tiny", raw)
    spec = spec_for(tmp_path / "raw" / "tiny")
    out = tmp_path / "processed"
    stats = preprocess_dataset(
        spec, tmp_path / "raw", out, train_size=200, val_size=50, test_size=None, seed=1
    )
    assert sorted(p.name for p in out.iterdir()) == ["stats.json", "test.npz", "train.npz", "val.npz"]
    assert json.loads((out / "stats.json").read_text()) == stats
    assert stats["source_digests"] == dict(spec.sha256)
    assert stats["sizes"] == {"train": 200, "val": 50, "test": 100} and stats["shape"] == [1, 28, 28]
    x, y = load_split(out / "train.npz", num_classes=10)
    assert (
        x.shape == (200, 1, 28, 28)
        and np.bincount(y, minlength=10).tolist() == stats["class_counts"]["train"]
    )
    # Same config, same bytes.
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    preprocess_dataset(spec, tmp_path / "raw", out, train_size=200, val_size=50, test_size=None, seed=1)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first


def test_preprocess_dataset_refuses_raw_files_that_changed_since_fetch(
    tmp_path: Path, raw: RawDataset
) -> None:
    paths = write_raw(tmp_path / "raw" / "tiny", raw)
    spec = spec_for(tmp_path / "raw" / "tiny")
    write_idx(paths[IDX_FILES[1]], np.roll(raw.train_labels, 1))  # same size, other content
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: SHA-256 .* does not match the pinned"):
        preprocess_dataset(spec, tmp_path / "raw", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_load_mnist_works_as_in_the_seed_readme(tmp_path: Path, raw: RawDataset) -> None:
    write_raw(tmp_path / "mnist_dataset", raw, gz=True)
    x_train, y_train, x_test, y_test = load_mnist(tmp_path / "mnist_dataset", subset_size=(100, 50))
    assert x_train.shape == (100, 1, 28, 28) and x_test.shape == (50, 1, 28, 28)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0  # pixels / 255
    assert np.bincount(y_test, minlength=10).tolist() == [5] * 10  # stratified
    x_all, *_ = load_mnist(tmp_path / "mnist_dataset")
    assert len(x_all) == len(raw.train_labels)
    with pytest.raises(ConfigError, match=r"subset_size n_train=10000 is larger than the 560 images"):
        load_mnist(tmp_path / "mnist_dataset", subset_size=(10000, 10))


def test_load_mnist_accepts_kaggles_file_names(tmp_path: Path, raw: RawDataset) -> None:
    folder = tmp_path / "kaggle"
    for name, path in write_raw(folder, raw).items():
        kaggle = name.replace("-idx", ".idx")  # train-images.idx3-ubyte
        path.rename(folder / kaggle)
    _, y_train, _, _ = load_mnist(folder, subset_size=(None, 10))
    np.testing.assert_array_equal(y_train, raw.train_labels)


def test_count_mismatch_between_images_and_labels_is_a_data_error(tmp_path: Path, raw: RawDataset) -> None:
    paths = write_raw(tmp_path / "d", raw)
    write_idx(paths[IDX_FILES[3]], raw.test_labels[:-1])
    with pytest.raises(
        DataError, match=r"t10k-labels-idx1-ubyte: 99 labels, but .*t10k-images-idx3-ubyte holds 100"
    ):
        load_mnist(tmp_path / "d")
