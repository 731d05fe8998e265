"""The benchmarks' bookkeeping: which torch row a ratio is taken against, which repeats count, and the
OpenBLAS kernels each worker is started with (the measurements themselves are never timed in tests)."""

from __future__ import annotations

import pytest

from benchmarks import inference, train_throughput
from benchmarks.train_throughput import summarise, worker_env
from cnn.blas import AUTO_ENV, CORETYPE_ENV, preferred_environment


def record(row: str, repeat: int, samples_per_sec: float, foreign: float = 0.0) -> dict:
    rec = {"row": row, "repeat": repeat, "batch_size": 32, "samples_per_sec": samples_per_sec}
    rec.update(peak_rss_mb=100.0, base_rss_mb=50.0, foreign_cpu=foreign, blas_kernels="SkylakeX")
    if row == "numpy":
        rec.update(threading="pool", blas="auto")
    return rec


def test_the_ratio_of_record_is_against_the_faster_plain_torch_row_of_each_repeat():
    records = []
    for rep, (nchw, cl) in enumerate([(100.0, 200.0), (250.0, 125.0), (100.0, 400.0)]):
        records += [record("numpy", rep, 100.0), record("torch-nchw", rep, nchw), record("torch-cl", rep, cl)]
        records.append(record("trainer", rep, 50.0))
    (row,) = summarise(records, [32], [("pool", "auto")])
    assert row["ratios"] == [0.5, 0.4, 0.25]  # against 200, 250 (NCHW was faster that time), 400
    assert row["ratio"] == 0.4
    assert row["torch"]["trainer"]["ratio"] == 2.0
    assert row["torch"]["torch-nchw"]["ratios"] == [1.0, 0.4, 1.0]


def test_repeats_that_other_processes_disturbed_are_left_out_when_three_clean_ones_remain():
    records = []
    for rep, foreign in enumerate([0.0, 0.0, 0.5, 0.0]):
        records += [
            record("numpy", rep, 100.0 if foreign == 0 else 90.0),
            record("torch-cl", rep, 200.0, foreign),
        ]
        records.append(record("torch-nchw", rep, 10.0))
    (row,) = summarise(records, [32], [("pool", "auto")])
    assert row["ratios"] == [0.5, 0.5, 0.45, 0.5]
    assert row["ratios_clean"] == [0.5, 0.5, 0.5] and row["clean"] and row["ratio"] == 0.5
    # With fewer than three undisturbed repeats, every repeat counts.
    (row,) = summarise(records[:6], [32], [("pool", "auto")])
    assert not row["clean"] and row["ratio"] == 0.5


def test_inference_ratios_are_paired_per_repeat_and_batch():
    records = []
    for rep in range(3):
        records.append(
            {"row": "numpy (auto)", "repeat": rep, "images_per_s": {"64": 90.0}, "foreign_cpu": 0.0}
        )
        records.append(
            {"row": "torch-nchw", "repeat": rep, "images_per_s": {"64": 100.0}, "foreign_cpu": 0.0}
        )
        records.append(
            {"row": "torch-cl", "repeat": rep, "images_per_s": {"64": 50.0 + rep * 30}, "foreign_cpu": 0.0}
        )
    (row,) = inference.summarise(records, [64], ["numpy (auto)"])
    assert row["ratios"] == [0.9, 0.9, 0.9 * 100 / 110]  # the faster plain row of each repeat
    assert row["target"] == inference.TARGET


@pytest.mark.parametrize("preset", [{}, {CORETYPE_ENV: "Zen"}])
def test_each_worker_starts_with_the_kernels_its_row_names(monkeypatch, preset):
    monkeypatch.delenv(CORETYPE_ENV, raising=False)
    monkeypatch.delenv(AUTO_ENV, raising=False)
    for key, value in preset.items():
        monkeypatch.setenv(key, value)
    assert worker_env("Haswell")[CORETYPE_ENV] == "Haswell"
    assert CORETYPE_ENV not in worker_env("openblas") and worker_env("openblas")[AUTO_ENV] == "0"
    auto = worker_env("auto")
    assert auto.get(CORETYPE_ENV) == preferred_environment().get(CORETYPE_ENV)
    assert str(train_throughput.ROOT) in auto["PYTHONPATH"]
