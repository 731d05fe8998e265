"""``python -m cnn.pipeline compose [OVERRIDE ...]``: write ``params.yaml`` from ``conf/``.

Also records which ``conf/`` it came from (``params.conf.json``, :mod:`cnn.pipeline.composition`), so
the ``compose`` stage of ``dvc repro`` keeps these overrides until ``conf/`` changes."""

from __future__ import annotations

from cnn.errors import ConfigError
from cnn.pipeline.composition import compose_and_record
from cnn.pipeline.paths import CONFIG_DIR
from cnn.pipeline.stage import stage_main


def _compose_main(argv: list[str]) -> None:
    """``python -m cnn.pipeline compose [OVERRIDE ...]``: write params.yaml from conf/."""
    if not argv or argv[0] != "compose":
        raise ConfigError("usage: python -m cnn.pipeline compose [OVERRIDE ...]  (e.g. experiment=smoke)")
    overrides = argv[1:]
    cfg = compose_and_record(overrides)
    extra = f" with {' '.join(overrides)}" if overrides else ""
    print(
        f"params.yaml composed from {CONFIG_DIR}/{extra}: {cfg['data']['name']} "
        f"{cfg['data']['train_size']}/{cfg['data']['val_size']}, {cfg['model']['name']}, "
        f"{cfg['optimizer']['name']} lr={cfg['optimizer']['lr']:g}, scheduler {cfg['scheduler']['name']}, "
        f"{cfg['train']['epochs']} epochs x batch {cfg['train']['batch_size']}"
    )


if __name__ == "__main__":
    stage_main(_compose_main, name="compose")
