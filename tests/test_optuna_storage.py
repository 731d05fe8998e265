"""cnn.pipeline.study.optuna_storage: an Optuna RDB storage that works under SQLAlchemy 2.

Optuna 2.10 (the newest the Hydra Optuna sweeper allows) never commits its schema stamp under
SQLAlchemy 2, so a bare ``sqlite:///`` URL fails the second time it is opened. Real SQLite files here;
PostgreSQL with two processes at once is tests/test_optuna_shared.py.
"""

from __future__ import annotations

import pytest

from cnn.errors import ConfigError

optuna = pytest.importorskip("optuna")


def test_a_study_in_sqlite_is_created_continued_and_numbers_its_trials_in_sequence(tmp_path):
    from cnn.pipeline.study import optuna_storage

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    for _ in range(2):  # the second open is the one Optuna 2.10 alone fails
        study = optuna.create_study(
            study_name="s", storage=optuna_storage(url), direction="maximize", load_if_exists=True
        )
        for _ in range(2):
            trial = study.ask()
            study.tell(trial, trial.suggest_float("x", 0.0, 1.0))
    assert [t.number for t in study.trials] == [0, 1, 2, 3]


def test_an_unreachable_storage_is_one_line_without_the_password(tmp_path):
    from cnn.pipeline.study import optuna_storage

    with pytest.raises(
        ConfigError, match=r"^optuna storage postgresql\+psycopg2://u:\*\*\*@127\.0\.0\.1:1/x: "
    ) as err:
        optuna_storage("postgresql+psycopg2://u:secret@127.0.0.1:1/x")
    assert "secret" not in str(err.value) and "\n" not in str(err.value)
