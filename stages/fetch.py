"""Stage ``fetch``: make ``<data.raw_dir>/<data.name>/`` hold the four verified IDX files and a manifest.

    python -m stages.fetch [--params params.yaml] [--debug]

Reads ``data.name``, ``data.raw_dir``, ``data.source_dir``, ``data.mirrors`` (HTTPS base URLs; ``null`` =
torchvision's, ``[]`` = none) and ``data.download_timeout_s`` from the validated params. All the work is
:func:`cnn.data.fetch_dataset`. Prints one summary line; a failed source is one line on stderr as it
fails; a config error exits 2 and a data error 1, each with one line (:func:`cnn.pipeline.stage_main`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from cnn.data import fetch_dataset
from cnn.pipeline import load_params, stage_main
from cnn.pipeline.stage import stage_args


def run(data: Mapping[str, Any]) -> str:
    """Fetch the dataset the validated ``data`` config group names; return the summary line."""
    start = time.perf_counter()
    mirrors = data["mirrors"]
    result = fetch_dataset(
        data["name"],
        data["raw_dir"],
        source_dir=data["source_dir"],
        mirrors=None if mirrors is None else list(mirrors),
        timeout_s=float(data["download_timeout_s"]),
    )
    how = (
        f"fetched {len(result.fetched)} from {', '.join(result.manifest['sources'])}"
        if result.fetched
        else "already present"
    )
    return (
        f"{data['name']}: 4 files verified (SHA-256) in {result.directory}, {how} "
        f"({time.perf_counter() - start:.2f} s)"
    )


def main(argv: list[str]) -> None:
    args = stage_args(argv, __doc__)
    print(f"fetch: {run(load_params(args.params)['data'])}")


if __name__ == "__main__":
    stage_main(main, name="fetch")
