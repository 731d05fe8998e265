"""Stage ``plot``: the six figures of the README, from the trained models and the evaluate stage's outputs.

    python -m stages.plot [--params params.yaml] [--no-track] [--debug]

Reads ``data.processed_dir``, ``data.name``, ``data.seed``, ``evaluate.num_samples``,
``evaluate.max_misclassified``, ``evaluate.feature_map_channels``, ``tracking.uri``, the training
histories, ``reports/predictions.npz``, the test split and both models; writes the six PNGs of
``reports/figures/`` and logs them to both training runs under ``figures/``. All the work is
:func:`cnn.pipeline.evaluate.render_figures_from_config` (the figures are described there).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cnn.pipeline import PARAMS_FILE, load_params, stage_main
from cnn.pipeline.evaluate import PlotPaths, render_figures_from_config


def run(argv: Sequence[str]) -> int:
    """Command line: read ``params.yaml``, draw, log, print one summary line."""
    parser = argparse.ArgumentParser(prog="python -m stages.plot", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=PARAMS_FILE, help="the composed config (default: %(default)s)")
    parser.add_argument("--no-track", action="store_true", help="do not log the figures to MLflow")
    args = parser.parse_args(list(argv))
    written = render_figures_from_config(load_params(args.params), track=not args.no_track)
    print(
        f"plot: {len(written)} figures -> {PlotPaths().figures_dir}/ ({', '.join(p.stem for p in written)})"
    )
    return 0


if __name__ == "__main__":
    stage_main(run, sys.argv[1:], name="plot")
