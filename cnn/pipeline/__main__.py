"""``python -m cnn.pipeline compose [OVERRIDE ...]``: write params.yaml from conf/."""

from cnn.pipeline import _compose_main, stage_main

stage_main(_compose_main, name="compose")
