"""Stage ``compose``: keep ``params.yaml`` the composition of the current ``conf/`` (plain ``dvc repro``).

    python -m stages.compose [--params params.yaml] [--debug]

DVC runs it when ``conf/``, ``params.yaml`` or ``params.conf.json`` changed. ``params.yaml`` composed from
this ``conf/`` (by ``make repro``, ``dvc exp run -S ...`` or ``python -m cnn.pipeline compose``) is kept
with its overrides; after an edit of ``conf/`` it is composed again, so the stages after it run with the
new values. All the work is :func:`cnn.pipeline.composition.refresh_params`.
"""

from __future__ import annotations

from cnn.pipeline import stage_main
from cnn.pipeline.composition import SOURCE_FILE, refresh_params
from cnn.pipeline.paths import CONFIG_DIR
from cnn.pipeline.stage import stage_args

MESSAGES = {
    "kept": f"{{params}} is composed from the current {CONFIG_DIR}/: kept as it is",
    "kept-exp": f"{{params}} composed by dvc exp run from the current {CONFIG_DIR}/: kept",
    "composed": f"{CONFIG_DIR}/ changed since {{params}} was composed: composed it again from {CONFIG_DIR}/ "
    "(without earlier overrides)",
}


def main(argv: list[str]) -> None:
    args = stage_args(argv, __doc__)
    done = refresh_params(args.params, source_file=SOURCE_FILE)
    print(f"compose: {MESSAGES[done].format(params=args.params)}")


if __name__ == "__main__":
    stage_main(main, name="compose")
