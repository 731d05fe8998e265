"""Stage ``evaluate``: both trained models on the test split -> metrics, DVC plot data, the comparison.

    python -m stages.evaluate [--params params.yaml] [--no-track] [--debug]

Reads ``data.processed_dir``, ``data.name``, ``evaluate.batch_size``, ``train.threads`` (per framework),
``tracking.uri``; writes ``metrics/evaluate.json``, ``plots/confusion_<fw>.json``,
``reports/predictions.npz``, ``reports/disagreements.json`` and ``reports/comparison.md``, logs the
test metrics and the report to both training runs (MLflow) and registers both models, moving each one's
``champion`` alias when the new version is better (``cnn-numpy@champion``). All the work is
:func:`cnn.pipeline.evaluate.evaluate_from_config` (the files are described there). Ends with the comparison
table on stdout.
"""

from __future__ import annotations

from cnn.pipeline import PipelinePaths, load_params, stage_main
from cnn.pipeline.evaluate import evaluate_from_config
from cnn.pipeline.report import comparison_summary, comparison_table
from cnn.pipeline.stage import stage_args


def main(argv: list[str]) -> None:
    args = stage_args(argv, __doc__)
    cfg = load_params(args.params)
    evaluation = evaluate_from_config(cfg, track=not args.no_track)
    print(comparison_table(evaluation.report_input()))
    print(comparison_summary(evaluation.report_input()))
    paths = PipelinePaths.from_config(cfg)
    print(f"evaluate: wrote {paths.evaluate_metrics}, {paths.comparison}, {paths.plots_dir}/confusion_*.json")


if __name__ == "__main__":
    stage_main(main, name="evaluate")
