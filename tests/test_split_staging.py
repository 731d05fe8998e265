"""cnn.pipeline.splits: the prepared splits reach a machine once, verified by digest, without races.

Real files and real processes: several processes stage the same splits into one cache at the same
moment (as several sweep jobs on one Ray node do); the source counts how often it is asked.
"""

from __future__ import annotations

import hashlib
import multiprocessing
from collections.abc import Mapping
from pathlib import Path

import pytest

from cnn.errors import DataError
from cnn.pipeline.splits import DirectorySource, manifest_key, split_manifest, stage_splits
from tests.helpers.synthetic_splits import write_processed_splits


class CountingSource(DirectorySource):
    """A folder source that appends one line to ``log`` per fetch (visible across processes)."""

    def __init__(self, folder: Path, log: Path, tamper: bool = False) -> None:
        super().__init__(folder)
        self.log = log
        self.tamper = tamper

    def fetch(self) -> Mapping[str, bytes]:
        with self.log.open("a") as fh:
            fh.write("fetch\n")
        payload = dict(super().fetch())
        if self.tamper:
            data = payload["train.npz"]
            payload["train.npz"] = bytes([data[0] ^ 0xFF]) + data[1:]
        return payload


def _stage(args: tuple[dict[str, str], Path, Path, Path]) -> str:
    manifest, folder, log, cache = args
    return str(stage_splits(manifest, CountingSource(folder, log), cache))


@pytest.fixture
def splits(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    folder = tmp_path / "processed"
    write_processed_splits(folder)
    return folder, split_manifest(folder)


def test_manifest_names_every_split_file_with_its_sha256(splits):
    folder, manifest = splits
    assert sorted(manifest) == ["stats.json", "test.npz", "train.npz", "val.npz"]
    assert manifest["train.npz"] == hashlib.sha256((folder / "train.npz").read_bytes()).hexdigest()


def test_a_folder_without_the_splits_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"no prepared train\.npz, val\.npz, test\.npz.*dvc repro preprocess"):
        split_manifest(tmp_path)


def test_four_processes_staging_at_once_fetch_once_and_all_get_the_verified_copy(splits, tmp_path):
    folder, manifest = splits
    log, cache = tmp_path / "fetches.log", tmp_path / "cache"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        staged = pool.map(_stage, [(manifest, folder, log, cache)] * 4)
    assert set(staged) == {str(cache / manifest_key(manifest))}
    assert log.read_text() == "fetch\n"
    for name in manifest:
        assert (Path(staged[0]) / name).read_bytes() == (folder / name).read_bytes()
    assert sorted(p.name for p in cache.iterdir()) == [
        manifest_key(manifest),
        f"{manifest_key(manifest)}.lock",
    ]


def test_a_machine_that_already_has_the_same_bytes_uses_them_and_fetches_nothing(splits, tmp_path):
    folder, manifest = splits
    log = tmp_path / "fetches.log"
    source = CountingSource(folder, log)
    source.reuse_dir = str(folder)
    assert stage_splits(manifest, source, tmp_path / "cache") == folder
    assert not log.exists() and not (tmp_path / "cache").exists()


def test_bytes_that_do_not_match_the_manifest_are_refused_and_nothing_is_written(splits, tmp_path):
    folder, manifest = splits
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"train\.npz: fetched bytes have SHA-256 .* expected"):
        stage_splits(manifest, CountingSource(folder, tmp_path / "log", tamper=True), cache)
    assert [p.name for p in cache.iterdir()] == [f"{manifest_key(manifest)}.lock"]


def test_a_damaged_staged_copy_is_replaced_by_a_verified_one(splits, tmp_path):
    folder, manifest = splits
    cache, log = tmp_path / "cache", tmp_path / "fetches.log"
    staged = stage_splits(manifest, CountingSource(folder, log), cache)
    (staged / "val.npz").write_bytes(b"damaged")
    assert stage_splits(manifest, CountingSource(folder, log), cache) == staged
    assert (staged / "val.npz").read_bytes() == (folder / "val.npz").read_bytes()
    assert log.read_text() == "fetch\nfetch\n"
