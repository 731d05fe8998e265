"""Stage ``plot``: the six figures of the README, from the trained models and the evaluate stage's outputs.

    python -m stages.plot [--params params.yaml] [--no-track] [--debug]

Reads ``data.processed_dir``, ``data.name``, ``data.seed``, ``evaluate.num_samples``,
``evaluate.max_misclassified``, ``evaluate.feature_map_channels``, ``tracking.uri``, the training
histories, ``reports/predictions.npz``, the test split and both models; writes the six PNGs of
``reports/figures/`` and logs them to both training runs under ``figures/``. All the work is
:func:`cnn.pipeline.figures.render_figures_from_config` (the figures are described there).
"""

from __future__ import annotations

from cnn.pipeline import PipelinePaths, load_params, stage_main
from cnn.pipeline.figures import render_figures_from_config
from cnn.pipeline.stage import stage_args


def main(argv: list[str]) -> None:
    args = stage_args(argv, __doc__)
    cfg = load_params(args.params)
    written = render_figures_from_config(cfg, track=not args.no_track)
    figures = PipelinePaths.from_config(cfg).figures_dir
    print(f"plot: {len(written)} figures -> {figures}/ ({', '.join(p.stem for p in written)})")


if __name__ == "__main__":
    stage_main(main, name="plot")
