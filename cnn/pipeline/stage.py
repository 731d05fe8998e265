"""Running a pipeline stage: one ``main()``, clean failures, exit codes that say how it ended.

:func:`stage_main` runs a stage function: a :class:`~cnn.errors.ConfigError` is one line on stderr and exit
code 2, any other :class:`~cnn.errors.CNNError` one line and exit code 1, an interrupt exit code 130; the
traceback only with ``--debug`` or ``HYDRA_FULL_ERROR=1``. Every stage of ``dvc.yaml`` ends with
``if __name__ == "__main__": stage_main(main, name=...)``.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from cnn.errors import CNNError, ConfigError

__all__ = ["EXIT_CONFIG", "EXIT_ERROR", "EXIT_INTERRUPTED", "one_line", "stage_args", "stage_main"]

EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130


def _wants_traceback(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("HYDRA_FULL_ERROR", "") not in ("", "0")


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) if str(exc).strip() else type(exc).__name__
    return text


def stage_main(
    fn: Callable[..., Any], argv: Sequence[str] | None = None, name: str | None = None
) -> NoReturn:
    """Run ``fn`` as a command-line stage and exit with a code that says how it ended.

    ``fn`` takes no argument, or the command-line arguments left after ``--debug`` is removed (a list of
    str). Its return value, if an int, is the exit code (default 0).

    Exit codes: 0 done; 2 :class:`~cnn.errors.ConfigError` (bad config: nothing was done); 1 any other
    :class:`~cnn.errors.CNNError` (bad data file, checkpoint, diverged training, tracking server down);
    130 ``KeyboardInterrupt`` (including ``cnn.training.TrainingInterrupted``, after its checkpoint was
    written). Those print one line on stderr, ``<stage>: error: <message>``; ``--debug`` or
    ``HYDRA_FULL_ERROR=1`` prints the traceback as well. Any other exception is a bug and propagates with
    its traceback.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = _wants_traceback(args)
    args = [a for a in args if a != "--debug"]
    stage = name or (
        fn.__module__.rsplit(".", 1)[-1] if fn.__module__ != "__main__" else Path(sys.argv[0]).stem
    )
    logging.basicConfig(level=logging.INFO, format=f"{stage}: %(message)s")
    code: int
    try:
        takes_args = bool(inspect.signature(fn).parameters)
        result = fn(args) if takes_args else fn()
        code = int(result) if isinstance(result, int) and not isinstance(result, bool) else 0
    except ConfigError as exc:
        code = _report(stage, exc, debug, EXIT_CONFIG)
    except CNNError as exc:
        code = _report(stage, exc, debug, EXIT_ERROR)
    except KeyboardInterrupt as exc:
        code = _report(stage, exc if str(exc) else KeyboardInterrupt("interrupted"), debug, EXIT_INTERRUPTED)
    sys.stdout.flush()
    raise SystemExit(code)


def _report(stage: str, exc: BaseException, debug: bool, code: int) -> int:
    if debug:
        traceback.print_exception(exc)
    hint = "" if debug else " (--debug shows the traceback)"
    print(f"{stage}: error: {one_line(exc)}{hint}", file=sys.stderr, flush=True)
    return code


def stage_args(argv: Sequence[str], doc: str | None) -> Any:
    """The options every stage takes: ``--params FILE`` (default ``params.yaml``) and ``--no-track`` (no
    MLflow logging). ``doc`` is the stage module's docstring (its first line describes the stage)."""
    import argparse

    from cnn.pipeline.paths import PARAMS_FILE

    parser = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0] if doc else None)
    parser.add_argument("--params", default=PARAMS_FILE, help="the composed config (default: %(default)s)")
    parser.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    return parser.parse_args(list(argv))
