"""Stage ``preprocess``: verified IDX files -> ``{train,val,test}.npz`` and ``stats.json``.

    python -m stages.preprocess [--params params.yaml] [--debug]

Reads ``data.name``, ``data.raw_dir``, ``data.processed_dir``, ``data.train_size``, ``data.val_size``,
``data.test_size`` and ``data.seed`` from the validated params. All the work is
:func:`cnn.data.preprocess_dataset` (which checks the raw files against the pinned digests first).
Prints one summary line; errors as in ``stages.fetch``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from cnn.data import preprocess_dataset
from cnn.pipeline import load_params, stage_main
from cnn.pipeline.stage import stage_args


def run(data: Mapping[str, Any]) -> str:
    """Preprocess the dataset the validated ``data`` config group names; return the summary line."""
    start = time.perf_counter()
    stats = preprocess_dataset(
        data["name"],
        data["raw_dir"],
        data["processed_dir"],
        train_size=data["train_size"],
        val_size=data["val_size"],
        test_size=data["test_size"],
        seed=data["seed"],
    )
    sizes = stats["sizes"]
    return (
        f"{stats['dataset']} train={sizes['train']} val={sizes['val']} test={sizes['test']} "
        f"mean={stats['mean']:.4f} std={stats['std']:.4f} -> {data['processed_dir']} "
        f"({time.perf_counter() - start:.2f} s)"
    )


def main(argv: list[str]) -> None:
    args = stage_args(argv, __doc__)
    print(f"preprocess: {run(load_params(args.params)['data'])}")


if __name__ == "__main__":
    stage_main(main, name="preprocess")
