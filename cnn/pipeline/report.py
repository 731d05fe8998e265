"""The NumPy-vs-PyTorch comparison as Markdown, rendered from the evaluate stage's metrics.

Input is the dict written to ``metrics/evaluate.json`` (see :mod:`cnn.pipeline.evaluate`)::

    {"numpy": {"test_accuracy", "test_loss", "train_time_s", "epochs", "batch_size", "samples_per_sec",
               "inference_images_per_sec", "inference_batch_size", "macro_f1",
               "per_class": {"0": {"precision", "recall", "f1", "support"}, ...}},
     "torch": {...},
     "agreement": {"rate", "disagreements", "only_numpy_correct", "only_torch_correct", "mcnemar_p", ...},
     "dataset": {"name", "train_size", "val_size", "test_size"},
     "machine": {"platform", "processor", "cpu_count", "python", "numpy", "torch", "threads"}}

Every key but the first four of a model is optional: what is missing renders as an em dash, so the
table also renders from the training metrics alone. Output is plain GitHub-flavoured Markdown with the
seed README's columns (model, data set, accuracy, training time for epochs x batch) plus throughput.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cnn.atomic import atomic_write_text

FRAMEWORK_NAMES = {"numpy": "NumPy CNN", "torch": "PyTorch CNN"}
"""Display name of each framework key of ``metrics/evaluate.json``, in table order."""

DASH = "—"


def format_duration(seconds: float | None) -> str:
    """``8.4 s``, ``6 min 02 s`` or ``1 h 05 min``; a dash for ``None``/NaN."""
    if seconds is None or not math.isfinite(seconds):
        return DASH
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        m, s = divmod(round(seconds), 60)
        return f"{m} min {s:02d} s"
    h, m = divmod(round(seconds / 60), 60)
    return f"{h} h {m:02d} min"


def _num(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return DASH
    return format(value, fmt)


def dataset_label(dataset: Mapping[str, Any] | None) -> str:
    """``MNIST (5k train, 10k test)`` from ``{"name", "train_size", "test_size"}``; a dash if unknown."""
    if not dataset:
        return DASH
    name = str(dataset.get("name", "")).replace("fashion_mnist", "Fashion-MNIST").replace("mnist", "MNIST")
    sizes = [
        f"{_count(dataset[key])} {word}"
        for key, word in (("train_size", "train"), ("test_size", "test"))
        if dataset.get(key)
    ]
    return f"{name} ({', '.join(sizes)})" if sizes else name or DASH


def _count(n: int) -> str:
    """5000 -> 5k, 55000 -> 55k, 10000 -> 10k, 1234 -> 1,234."""
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else f"{n:,}"


def frameworks(evaluation: Mapping[str, Any]) -> list[str]:
    """The framework keys present in ``evaluation``, in :data:`FRAMEWORK_NAMES` order."""
    return [fw for fw in FRAMEWORK_NAMES if isinstance(evaluation.get(fw), Mapping)]


def comparison_table(evaluation: Mapping[str, Any]) -> str:
    """The Performance Comparison table, one row per framework, as Markdown."""
    data = dataset_label(evaluation.get("dataset"))
    infer_batch = next((evaluation[fw].get("inference_batch_size") for fw in frameworks(evaluation)), None)
    infer_head = f"Inference (images/s, batch {infer_batch})" if infer_batch else "Inference (images/s)"
    lines = [
        f"| Model | Dataset | Test accuracy | Test loss | Training time | Epochs × batch | "
        f"Training (samples/s) | {infer_head} |",
        "|---|---|--:|--:|--:|:-:|--:|--:|",
    ]
    for fw in frameworks(evaluation):
        m = evaluation[fw]
        acc = m.get("test_accuracy")
        epochs, batch = m.get("epochs"), m.get("batch_size")
        lines.append(
            "| "
            + " | ".join(
                [
                    FRAMEWORK_NAMES[fw],
                    data,
                    DASH if acc is None else f"{acc:.2%}",
                    _num(m.get("test_loss"), ".4f"),
                    format_duration(m.get("train_time_s")),
                    f"{epochs} × {batch}" if epochs is not None and batch is not None else DASH,
                    _num(m.get("samples_per_sec"), ",.0f"),
                    _num(m.get("inference_images_per_sec"), ",.0f"),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def _ratio(a: Any, b: Any) -> float | None:
    if not a or not b or not all(isinstance(v, int | float) for v in (a, b)):
        return None
    return a / b


def _faster(torch_over_numpy: float) -> str:
    """``PyTorch is 12.9× faster than NumPy`` (or the other way round) from the speed ratio torch/numpy."""
    if torch_over_numpy >= 1:
        return f"PyTorch is {torch_over_numpy:.1f}× faster than NumPy"
    return f"NumPy is {1 / torch_over_numpy:.1f}× faster than PyTorch"


def comparison_summary(evaluation: Mapping[str, Any]) -> str:
    """Two or three sentences: which framework is faster by how much, and whether the accuracy gap is real."""
    if frameworks(evaluation) != ["numpy", "torch"]:
        return ""
    np_m, pt_m = evaluation["numpy"], evaluation["torch"]
    parts = []
    train = _ratio(np_m.get("train_time_s"), pt_m.get("train_time_s"))
    infer = _ratio(pt_m.get("inference_images_per_sec"), np_m.get("inference_images_per_sec"))
    if train is not None:
        parts.append(f"Training: {_faster(train)}.")
    if infer is not None:
        parts.append(f"Inference: {_faster(infer)}.")
    acc_np, acc_pt = np_m.get("test_accuracy"), pt_m.get("test_accuracy")
    ag = evaluation.get("agreement") or {}
    if acc_np is not None and acc_pt is not None:
        diff = (acc_pt - acc_np) * 100
        sentence = (
            f"Test accuracy differs by {abs(diff):.2f} points ({'PyTorch' if diff > 0 else 'NumPy'} ahead)"
        )
        if diff == 0:
            sentence = "Test accuracy is identical"
        p = ag.get("mcnemar_p")
        if p is not None:
            verdict = "a significant difference" if p < 0.05 else "not a significant difference"
            sentence += (
                f"; on the images only one model gets right (NumPy {ag.get('only_numpy_correct')}, "
                f"PyTorch {ag.get('only_torch_correct')}), McNemar's exact test gives p = {p:.3g}: {verdict}"
            )
        parts.append(sentence + ".")
    if ag.get("rate") is not None:
        n = (evaluation.get("dataset") or {}).get("test_size")
        of = f" of the {n:,} test images" if n else ""
        parts.append(
            f"The two models predict the same class for {ag['rate']:.2%}{of} "
            f"({ag.get('disagreements', DASH)} disagreements)."
        )
    return " ".join(parts)


def per_class_table(evaluation: Mapping[str, Any]) -> str:
    """Per-class precision / recall / F1 of every framework side by side, with the class support."""
    fws = [fw for fw in frameworks(evaluation) if evaluation[fw].get("per_class")]
    if not fws:
        return ""
    classes = list(evaluation[fws[0]]["per_class"])
    head = ["Class"] + [f"{FRAMEWORK_NAMES[fw].split()[0]} {s}" for fw in fws for s in ("P", "R", "F1")]
    lines = ["| " + " | ".join([*head, "Support"]) + " |", "|---|" + "--:|" * (len(head))]
    for c in classes:
        cells = [c]
        for fw in fws:
            s = evaluation[fw]["per_class"].get(c, {})
            cells += [_num(s.get(k), ".3f") for k in ("precision", "recall", "f1")]
        cells.append(str(evaluation[fws[0]]["per_class"][c].get("support", DASH)))
        lines.append("| " + " | ".join(cells) + " |")
    macro = ["**macro**"]
    for fw in fws:
        mac = evaluation[fw].get("macro") or {}
        macro += [_num(mac.get(k), ".3f") for k in ("precision", "recall", "f1")]
    lines.append("| " + " | ".join([*macro, ""]) + " |")
    return "\n".join(lines)


def machine_line(machine: Mapping[str, Any] | None) -> str:
    """``Measured on: Linux-6.1 x86_64, 2 CPUs (2 threads); Python 3.11, NumPy 2.4, torch 2.13.``"""
    if not machine:
        return ""
    bits = [str(machine.get("platform", "unknown platform"))]
    if machine.get("processor"):
        bits.append(str(machine["processor"]))
    cpus = f"{machine['cpu_count']} CPUs" if machine.get("cpu_count") else ""
    if cpus and machine.get("threads"):
        n = machine["threads"]
        cpus += f" ({n} thread{'s' if n != 1 else ''} used)"
    if cpus:
        bits.append(cpus)
    labels = (("python", "Python"), ("numpy", "NumPy"), ("torch", "torch"))
    versions = ", ".join(f"{label} {machine[key]}" for key, label in labels if machine.get(key))
    device = machine.get("torch_device")
    on_device = f"; PyTorch on {device}" if device and device != "cpu" else ""
    return "Measured on " + ", ".join(bits) + (f"; {versions}" if versions else "") + on_device + "."


def render_comparison(evaluation: Mapping[str, Any], title: str = "NumPy CNN vs PyTorch CNN") -> str:
    """The whole ``reports/comparison.md``: table, verdict, per-class scores, machine."""
    sections = [f"# {title}", "## Performance comparison", comparison_table(evaluation)]
    summary = comparison_summary(evaluation)
    if summary:
        sections.append(summary)
    machine = machine_line(evaluation.get("machine"))
    if machine:
        sections.append(machine)
    sections.append(
        "Training time and training samples/s come from the training stages (`metrics/train_<fw>.json`); "
        "inference is the forward pass (logits) over the whole test set in batches, timed after one warm-up "
        "batch, in eval mode."
    )
    per_class = per_class_table(evaluation)
    if per_class:
        sections += ["## Per-class precision (P), recall (R) and F1 on the test set", per_class]
    return "\n\n".join(sections) + "\n"


def write_comparison(evaluation: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Render :func:`render_comparison` into ``path`` atomically; return the path."""
    return atomic_write_text(path, render_comparison(evaluation))
