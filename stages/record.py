"""Stage ``record``: this experiment's MLflow run per framework, also when DVC restored the training.

    python -m stages.record [--params params.yaml] [--no-track] [--debug]

Runs after ``evaluate`` for every new ``params.yaml``. Where DVC restored a trained model from its cache
(so no training run carries this DVC experiment's name), starts a run ``<exp name>-<fw>`` that records the
experiment and links the run that trained the weights; writes ``reports/mlflow_runs.json``. All the work
is :func:`cnn.pipeline.record.record_experiment`.
"""

from __future__ import annotations

from cnn.pipeline import load_params, stage_main
from cnn.pipeline.record import record_experiment
from cnn.pipeline.stage import stage_args


def main(argv: list[str]) -> None:
    args = stage_args(argv, __doc__)
    cfg = load_params(args.params)
    record = record_experiment(cfg, track=not args.no_track)
    for fw, run in record["runs"].items():
        if run is None:
            print(f"record: {fw}: trained untracked, no run")
        elif run["trained_here"]:
            print(f"record: {fw}: run {run['run_name']} trained these weights")
        elif run["run_id"] is None:
            print(f"record: {fw}: weights from run {run['weights_run_name']} (tracking off)")
        else:
            exp, weights = record["dvc_exp_name"], run["weights_run_name"]
            print(f"record: {fw}: run {run['run_name']} records {exp}; weights from run {weights}")


if __name__ == "__main__":
    stage_main(main, name="record")
