"""cnn.pipeline.report: the Performance Comparison table renders from a small metrics file."""

from __future__ import annotations

import json

import pytest

from cnn.pipeline.report import (
    comparison_table,
    dataset_label,
    format_duration,
    render_comparison,
    write_comparison,
)

EVALUATION = {
    "numpy": {
        "test_accuracy": 0.9712,
        "test_loss": 0.0921,
        "train_time_s": 362.4,
        "epochs": 5,
        "batch_size": 32,
        "samples_per_sec": 69.0,
        "inference_images_per_sec": 1850.2,
        "inference_batch_size": 1000,
        "macro": {"precision": 0.97, "recall": 0.971, "f1": 0.9705},
        "per_class": {
            "0": {"precision": 0.99, "recall": 0.98, "f1": 0.985, "support": 980},
            "1": {"precision": 0.95, "recall": 0.96, "f1": 0.955, "support": 1135},
        },
    },
    "torch": {
        "test_accuracy": 0.9801,
        "test_loss": 0.0655,
        "train_time_s": 28.0,
        "epochs": 5,
        "batch_size": 32,
        "samples_per_sec": 893.0,
        "inference_images_per_sec": 15000.0,
        "inference_batch_size": 1000,
        "macro": {"precision": 0.98, "recall": 0.98, "f1": 0.98},
        "per_class": {
            "0": {"precision": 0.995, "recall": 0.99, "f1": 0.9925, "support": 980},
            "1": {"precision": 0.97, "recall": 0.975, "f1": 0.9725, "support": 1135},
        },
    },
    "agreement": {
        "rate": 0.9789,
        "disagreements": 211,
        "only_numpy_correct": 60,
        "only_torch_correct": 149,
        "mcnemar_p": 1.2e-9,
    },
    "dataset": {"name": "mnist", "train_size": 5000, "val_size": 1000, "test_size": 10000},
    "machine": {"platform": "Linux-6.1-x86_64", "cpu_count": 2, "threads": 2, "python": "3.11.9"},
}


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(8.44, "8.4 s"), (59.94, "59.9 s"), (362.4, "6 min 02 s"), (3900, "1 h 05 min"), (None, "—")],
)
def test_durations_read_like_the_seed_table(seconds, text):
    assert format_duration(seconds) == text


def test_dataset_label_names_the_subset_sizes():
    assert dataset_label(EVALUATION["dataset"]) == "MNIST (5k train, 10k test)"
    assert dataset_label({"name": "fashion_mnist", "train_size": 1234}) == "Fashion-MNIST (1,234 train)"
    assert dataset_label(None) == "—"


def test_table_has_one_row_per_framework_with_the_seed_columns():
    table = comparison_table(EVALUATION).splitlines()
    assert table[0].startswith(
        "| Model | Dataset | Test accuracy | Test loss | Training time | Epochs × batch |"
    )
    assert "Inference (images/s, batch 1000)" in table[0]
    assert table[2] == (
        "| NumPy CNN | MNIST (5k train, 10k test) | 97.12% | 0.0921 | 6 min 02 s | 5 × 32 | 69 | 1,850 |"
    )
    assert table[3] == (
        "| PyTorch CNN | MNIST (5k train, 10k test) | 98.01% | 0.0655 | 28.0 s | 5 × 32 | 893 | 15,000 |"
    )
    assert len(table) == 4


def test_missing_values_render_as_dashes_not_errors():
    table = comparison_table({"numpy": {"test_accuracy": 0.5, "test_loss": 1.0}})
    assert table.splitlines()[2] == "| NumPy CNN | — | 50.00% | 1.0000 | — | — | — | — |"


def test_report_states_speedups_agreement_and_significance():
    md = render_comparison(EVALUATION)
    assert md.startswith("# NumPy CNN vs PyTorch CNN\n")
    assert "Training: PyTorch is 12.9× faster than NumPy. Inference: PyTorch is 8.1× faster than NumPy." in md
    assert "Test accuracy differs by 0.89 points (PyTorch ahead)" in md
    assert "p = 1.2e-09: a significant difference" in md
    assert "98.89% of the 10,000 test images (211 disagreements)" not in md  # rate comes from the file
    assert "97.89% of the 10,000 test images (211 disagreements)" in md
    assert "Measured on Linux-6.1-x86_64, 2 CPUs (2 threads used); Python 3.11.9." in md
    assert "| 1 | 0.950 | 0.960 | 0.955 | 0.970 | 0.975 | 0.973 | 1135 |" in md  # per-class row


def test_write_comparison_renders_from_a_metrics_file(tmp_path):
    metrics = tmp_path / "metrics" / "evaluate.json"
    metrics.parent.mkdir()
    metrics.write_text(json.dumps(EVALUATION))
    out = write_comparison(json.loads(metrics.read_text()), tmp_path / "reports" / "comparison.md")
    text = out.read_text(encoding="utf-8")
    assert text == render_comparison(EVALUATION)
    assert "| PyTorch CNN |" in text and text.endswith("\n")
    assert not list(out.parent.glob("*.tmp"))


def test_machine_line_names_a_torch_accelerator_but_not_the_cpu():
    from cnn.pipeline.report import machine_line

    base = {"platform": "Linux", "cpu_count": 16, "threads": 1}
    assert machine_line({**base, "torch_device": "cuda:0"}) == (
        "Measured on Linux, 16 CPUs (1 thread used); PyTorch on cuda:0."
    )
    assert machine_line({**base, "torch_device": "cpu"}) == "Measured on Linux, 16 CPUs (1 thread used)."
    assert machine_line(None) == ""
