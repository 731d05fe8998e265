"""Stage ``evaluate``: both trained models on the test split -> metrics, DVC plot data, the comparison.

    python -m stages.evaluate [--params params.yaml] [--no-track] [--debug]

Reads ``data.processed_dir``, ``data.name``, ``evaluate.batch_size``, ``train.threads`` (per framework),
``tracking.uri``; writes ``metrics/evaluate.json``, ``plots/confusion_<fw>.json``,
``reports/predictions.npz``, ``reports/disagreements.json`` and ``reports/comparison.md``, and logs the
test metrics and the report to both training runs (MLflow). All the work is
:func:`cnn.pipeline.evaluate.evaluate_from_config` (the files are described there). Ends with the comparison
table on stdout.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cnn.pipeline import PARAMS_FILE, load_params, stage_main
from cnn.pipeline.evaluate import EvaluatePaths, evaluate_from_config
from cnn.pipeline.report import comparison_summary, comparison_table


def run(argv: Sequence[str]) -> int:
    """Command line: read ``params.yaml``, evaluate, print the comparison table."""
    parser = argparse.ArgumentParser(prog="python -m stages.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=PARAMS_FILE, help="the composed config (default: %(default)s)")
    parser.add_argument("--no-track", action="store_true", help="do not log to the MLflow training runs")
    args = parser.parse_args(list(argv))
    evaluation = evaluate_from_config(load_params(args.params), track=not args.no_track)
    print(comparison_table(evaluation.report_input()))
    print(comparison_summary(evaluation.report_input()))
    paths = EvaluatePaths()
    print(f"evaluate: wrote {paths.evaluate_metrics}, {paths.comparison}, {paths.plots_dir}/confusion_*.json")
    return 0


if __name__ == "__main__":
    stage_main(run, sys.argv[1:], name="evaluate")
