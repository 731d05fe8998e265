"""Glue between ``params.yaml`` and the library: what every DVC stage (and the Hydra sweep) shares.

- :func:`compose_params` -- compose ``conf/`` into ``params.yaml`` exactly as ``dvc exp run`` does (it calls
  DVC's own Hydra composition), then validate it. ``make repro`` runs it before ``dvc repro``, which does
  not compose by itself.
- :func:`load_params` -- read and validate ``params.yaml`` (:func:`cnn.pipeline.config.validate_config`).
- :func:`stage_main` -- run a stage function with clean failures: a :class:`~cnn.errors.ConfigError` is one
  line on stderr and exit code 2, any other :class:`~cnn.errors.CNNError` one line and exit code 1, an
  interrupt exit code 130; the traceback only with ``--debug`` or ``HYDRA_FULL_ERROR=1``.
- :func:`train_from_config` -- train one framework from a config: load the processed splits, build the
  network, fit with per-epoch MLflow logging and a resume checkpoint, save the model and its run pointer.
- :func:`write_json` -- atomic JSON output (metrics, plot data).

Command line: ``python -m cnn.pipeline compose [OVERRIDE ...]`` writes ``params.yaml`` from ``conf/``.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import re
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from cnn.errors import CNNError, ConfigError
from cnn.pipeline.config import FRAMEWORKS, arch_config, train_config_for, validate_config

__all__ = [
    "CONFIG_DIR",
    "CONFIG_NAME",
    "PARAMS_FILE",
    "TrainResult",
    "compose_params",
    "load_params",
    "model_path",
    "optimizer_kwargs",
    "run_train_stage",
    "scheduler_kwargs",
    "stage_main",
    "train_from_config",
    "write_json",
]

log = logging.getLogger(__name__)

#: The composed config every stage reads (DVC's default params file).
PARAMS_FILE = "params.yaml"
#: Where the Hydra configs live and the primary config's name; equal to ``.dvc/config``'s ``hydra`` section.
CONFIG_DIR = "conf"
CONFIG_NAME = "config"
#: Where each framework's trained model goes (``models/<framework>/``) and its file name.
MODELS_DIR = "models"
MODEL_FILES = {"numpy": "model.npz", "torch": "model.pt"}
RUN_POINTER_FILE = "mlflow_run.json"
METRICS_DIR = "metrics"
PLOTS_DIR = "plots"
#: The resume checkpoint, in ``<train.checkpoint_dir>/<framework>/``, rewritten after every epoch.
CHECKPOINT_FILES = {"numpy": "resume.npz", "torch": "resume.pt"}

EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130


# ---------------------------------------------------------------------------------------------------------
# params.yaml


def compose_params(
    overrides: Sequence[str] = (),
    output: str | os.PathLike[str] = PARAMS_FILE,
    config_dir: str | os.PathLike[str] = CONFIG_DIR,
    config_name: str = CONFIG_NAME,
) -> dict[str, Any]:
    """Compose ``config_dir`` with Hydra ``overrides`` into ``output``, as ``dvc exp run -S ...`` would.

    The file is written by DVC's own ``compose_and_dump`` (so ``dvc exp run`` and ``make repro`` produce
    byte-identical files) to a temporary name, validated, then moved into place: an invalid composition
    leaves the previous ``params.yaml`` untouched.

    Returns:
        The validated config (:func:`cnn.pipeline.config.validate_config`).

    Raises:
        ConfigError: an unknown group option or key, a malformed override, or a value the schema rejects.
    """
    from dvc.utils.hydra import compose_and_dump
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    output = Path(output)
    # DVC picks its dumper by suffix: the temporary file must end in .yaml too.
    tmp = output.with_name(f".{output.stem}.tmp{output.suffix}")
    config_dir = Path(config_dir).resolve()
    if not (config_dir / f"{config_name}.yaml").is_file():
        raise ConfigError(f"{config_dir / config_name}.yaml: not found; expected the Hydra primary config")
    try:
        compose_and_dump(tmp, str(config_dir), None, config_name, str(config_dir.parent), list(overrides))
        composed = OmegaConf.to_container(OmegaConf.load(tmp), resolve=True)
        cfg = validate_config(composed, source=f"{CONFIG_DIR}/ with overrides {list(overrides)}")
    except (HydraException, OmegaConfBaseException) as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"{CONFIG_DIR}/ with overrides {list(overrides)}: {_hydra_message(exc)}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, output)
    return cfg


def _hydra_message(exc: BaseException) -> str:
    """One line from a Hydra composition error: key, value and what is allowed where Hydra says so."""
    text = str(exc).strip()
    missing = re.search(r"Could not find '([\w/]+)/(\w+)'", text)
    options = getattr(exc, "options", None)
    if missing and options:
        group, option = missing.groups()
        allowed = ", ".join(options)
        return f"{group} = {option!r} is not allowed; expected one of {allowed} ({CONFIG_DIR}/{group}/)"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines and lines[0].startswith("Could not override"):
        # "Could not override 'optimizer.foo'. To append to your config use +optimizer.foo=1"
        return " ".join(lines[:2])
    return lines[0] if lines else type(exc).__name__


def load_params(path: str | os.PathLike[str] = PARAMS_FILE) -> dict[str, Any]:
    """Read ``path`` (the composed config) and return it validated, every schema key filled in.

    Raises:
        ConfigError: missing or not YAML, or :func:`~cnn.pipeline.config.validate_config` rejects it.
    """
    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"{path}: not found; compose it from {CONFIG_DIR}/ with `python -m cnn.pipeline compose` "
            "(make repro and dvc exp run do this)"
        )
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except (OmegaConfBaseException, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a valid YAML config: {_one_line(exc)}") from exc
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: expected a mapping of config groups, found {type(raw).__name__}")
    return validate_config(raw, source=str(path))


# ---------------------------------------------------------------------------------------------------------
# Running a stage


def _wants_traceback(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("HYDRA_FULL_ERROR", "") not in ("", "0")


def _one_line(exc: BaseException) -> str:
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
    print(f"{stage}: error: {_one_line(exc)}{hint}", file=sys.stderr, flush=True)
    return code


# ---------------------------------------------------------------------------------------------------------
# Files


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically (temporary file + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def model_path(framework: str, models_dir: str | os.PathLike[str] = MODELS_DIR) -> Path:
    """``models/numpy/model.npz`` or ``models/torch/model.pt``."""
    return Path(models_dir) / framework / MODEL_FILES[framework]


# ---------------------------------------------------------------------------------------------------------
# Training


def optimizer_kwargs(optimizer: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``make_optimizer(name, params, lr, **kw)`` read from an optimizer group.

    Only the keys the named optimizer reads: SGD ``momentum, nesterov, weight_decay``; Adam and AdamW
    ``betas, eps, weight_decay``.
    """
    keys = (
        ("momentum", "nesterov", "weight_decay")
        if optimizer["name"] == "sgd"
        else ("betas", "eps", "weight_decay")
    )
    kw = {k: optimizer[k] for k in keys}
    if "betas" in kw:
        kw["betas"] = tuple(kw["betas"])
    return kw


def scheduler_kwargs(scheduler: Mapping[str, Any], epochs: int) -> dict[str, Any]:
    """The keyword arguments of ``make_scheduler(name, opt, **kw)`` read from a scheduler group.

    ``step``: step_size, gamma; ``exponential``: gamma; ``cosine``: T_max (null = ``epochs``), eta_min;
    ``plateau``: mode, factor, patience; every scheduler: warmup_epochs when > 0.
    """
    name = scheduler["name"]
    per_name: dict[str, tuple[str, ...]] = {
        "none": (),
        "step": ("step_size", "gamma"),
        "exponential": ("gamma",),
        "cosine": ("T_max", "eta_min"),
        "plateau": ("mode", "factor", "patience"),
    }
    kw = {k: scheduler[k] for k in per_name[name]}
    if name == "cosine" and kw["T_max"] is None:
        kw["T_max"] = epochs
    if scheduler.get("warmup_epochs", 0):
        kw["warmup_epochs"] = scheduler["warmup_epochs"]
    return kw


@dataclass
class TrainResult:
    """What :func:`train_from_config` returns.

    Attributes:
        framework: ``"numpy"`` or ``"torch"``.
        model: the trained ``cnn.CNN`` or the torch trainer (both have ``predict``/``evaluate``/``save``).
        history: per-epoch lists ``{loss, accuracy, val_loss, val_accuracy, lr, epoch_time}``.
        train_time_s: wall time of ``fit`` in seconds.
        samples_per_sec: training images processed per second (``epochs * N / train_time_s``).
        epochs, batch_size: as trained.
        model_path: where the model was saved, or None.
        run_id: the MLflow run, or None when not tracked.
    """

    framework: str
    model: Any
    history: dict[str, list[float]]
    train_time_s: float
    samples_per_sec: float
    epochs: int
    batch_size: int
    model_path: Path | None = None
    run_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> dict[str, float]:
        """The last epoch's ``loss, accuracy, val_loss, val_accuracy``."""
        keys = ("loss", "accuracy", "val_loss", "val_accuracy")
        return {k: float(self.history[k][-1]) for k in keys if self.history.get(k)}

    def metrics(self) -> dict[str, Any]:
        """The content of ``metrics/train_<framework>.json``."""
        return {
            "train_time_s": round(self.train_time_s, 3),
            "samples_per_sec": round(self.samples_per_sec, 1),
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "final": self.final,
        }

    def history_records(self) -> list[dict[str, float]]:
        """The content of ``plots/history_<framework>.json``: one record per epoch, ``epoch`` from 1."""
        n = len(self.history.get("loss", []))
        return [
            {"epoch": i + 1, **{k: float(v[i]) for k, v in self.history.items() if len(v) == n}}
            for i in range(n)
        ]


def _load_training_data(cfg: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load the processed train and val splits and check that the model fits them."""
    from cnn.data import load_split

    processed = Path(cfg["data"]["processed_dir"])
    num_classes = cfg["model"]["num_classes"]
    x, y = load_split(processed / "train.npz", sample_shape=None, num_classes=None)
    x_val, y_val = load_split(processed / "val.npz", sample_shape=None, num_classes=None)
    want = tuple(cfg["model"]["input_shape"])
    for split, arr in (("train", x), ("val", x_val)):
        if tuple(arr.shape[1:]) != want:
            raise ConfigError(
                f"model.input_shape = {list(want)} does not fit the data; expected {list(arr.shape[1:])}, "
                f"the image shape in {processed / (split + '.npz')}"
            )
    top = int(max(y.max(initial=0), y_val.max(initial=0)))
    if top >= num_classes:
        raise ConfigError(
            f"model.num_classes = {num_classes} does not fit the data; expected > {top}, the largest label "
            f"in {processed}"
        )
    return x, y, x_val, y_val


def _set_numpy_threads(threads: int | None) -> Any:
    """Limit BLAS threads (NumPy's matmuls) to ``threads``; None leaves the library default (all cores)."""
    if threads is None:
        return None
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads)


def train_from_config(
    cfg: Mapping[str, Any],
    framework: str,
    *,
    models_dir: str | os.PathLike[str] | None = MODELS_DIR,
    track: bool = True,
    nested: bool = False,
    run_name: str | None = None,
    callbacks: Iterable[object] = (),
    verbose: int = 1,
) -> TrainResult:
    """Train ``framework`` (``"numpy"`` or ``"torch"``) as ``cfg`` says, on ``data.processed_dir``'s splits.

    Steps: validate ``cfg``; check the tracking store (fails within seconds, before any work); load
    ``train.npz``/``val.npz`` and check they fit ``model``; build the network from ``model`` with
    ``train.seed`` and ``train.dtype``; fit for ``train.epochs`` with the optimizer and scheduler groups
    (resume checkpoint at ``<train.checkpoint_dir>/<framework>/``, resumed from when ``train.resume``);
    save it to ``<models_dir>/<framework>/model.{npz,pt}``; with ``track``, log params, per-epoch metrics,
    the checkpoint and the MLflow model to a run (nested under the active run with ``nested``) and write
    ``mlflow_run.json`` beside the model.

    Args:
        cfg: a composed config (validated here; a validated one passes unchanged).
        framework: ``"numpy"`` or ``"torch"``; ``train.<framework>`` overrides apply.
        models_dir: parent folder of the saved model; None saves nothing.
        track: log to MLflow (``tracking.uri`` / ``$MLFLOW_TRACKING_URI`` / the repo's SQLite file).
        nested, run_name: passed to :func:`cnn.pipeline.tracking.start_training_run`.
        callbacks: extra ``on_epoch_end(epoch, logs)`` / ``on_train_end(history)`` objects.
        verbose: 0 silent, 1 a progress bar per epoch, 2 one line per epoch.

    Returns:
        :class:`TrainResult`.

    Raises:
        ConfigError: ``cfg`` is invalid or does not fit the data. DataError: a split is missing or corrupt.
        TrackingError: the tracking store cannot be used. TrainingDivergedError: the loss became NaN/inf.
        cnn.training.TrainingInterrupted: SIGINT/SIGTERM; the resume checkpoint was written.
    """
    if framework not in FRAMEWORKS:
        raise ConfigError(
            f"framework = {framework!r} is not allowed; expected one of {', '.join(FRAMEWORKS)}"
        )
    cfg = validate_config(cfg, source="config")
    train = train_config_for(cfg, framework)
    if track:
        from cnn.pipeline.tracking import check_tracking_uri, resolve_tracking_uri

        check_tracking_uri(resolve_tracking_uri(cfg["tracking"]["uri"]))
    x, y, x_val, y_val = _load_training_data(cfg)
    save_to = model_path(framework, models_dir) if models_dir is not None else None
    checkpoint = Path(train["checkpoint_dir"]) / framework / CHECKPOINT_FILES[framework]
    data = (x, y, x_val, y_val)
    if not track:
        return _fit(cfg, train, framework, data, list(callbacks), checkpoint, save_to, verbose)

    from cnn.pipeline import serving, tracking

    spec = serving.spec_for(cfg, framework)  # the model's own normalisation: fails before training
    with tracking.start_training_run(cfg, framework, nested=nested, run_name=run_name) as run:
        tracking.log_datasets(cfg, {"train": (x, y), "val": (x_val, y_val)})
        cbs = [tracking.MLflowCallback(run.info.run_id), *callbacks]
        result = _fit(cfg, train, framework, data, cbs, checkpoint, save_to, verbose)
        result.run_id = run.info.run_id
        summary = result.metrics()
        tracking.log_run_summary(
            run.info.run_id,
            {k: summary[k] for k in ("train_time_s", "samples_per_sec")},
            step=len(result.history.get("loss", [])),
        )
        example = serving.raw_pixels(x[:5], spec.mean, spec.std)  # what a user sends: raw uint8 images
        if framework == "numpy":
            serving.log_numpy_model(result.model, spec, example)
        else:
            serving.log_torch_model(_torch_module(result.model), spec, example)
        if save_to is not None:
            tracking.log_artifact(save_to, artifact_path="checkpoint")
            tracking.write_run_pointer(save_to.parent / RUN_POINTER_FILE, run)
    return result


def _build_model(cfg: Mapping[str, Any], train: Mapping[str, Any], framework: str) -> Any:
    """A fresh network from the ``model`` group: a ``cnn.CNN``, or a ``TorchTrainer`` around a ``TorchCNN``
    with the ``train`` group's execution options. Same architecture, dtype and seed: same initial weights."""
    arch = arch_config(cfg["model"]).to_dict()
    dtype = np.dtype(train["dtype"])
    if framework == "numpy":
        from cnn.model import CNN

        return CNN.from_config(arch, dtype=dtype, seed=train["seed"])
    from cnn.torch_train import TorchTrainer

    return TorchTrainer.from_config(
        arch,
        dtype=dtype,
        seed=train["seed"],
        device=train["device"],
        threads=train["threads"],
        deterministic=train["deterministic"],
        channels_last=train["channels_last"],
        compile=train["compile"],
        amp=train["amp"],
    )


def _fit(
    cfg: Mapping[str, Any],
    train: Mapping[str, Any],
    framework: str,
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    callbacks: list[object],
    checkpoint: Path,
    save_to: Path | None,
    verbose: int,
) -> TrainResult:
    """Build, fit and save one framework's model; both trainers take the same arguments."""
    x, y, x_val, y_val = data
    model = _build_model(cfg, train, framework)
    # NumPy's BLAS threads are per process; torch's are set by its trainer from train.threads.
    limits = _set_numpy_threads(train["threads"]) if framework == "numpy" else None
    try:
        start = time.perf_counter()
        history = model.fit(
            x,
            y,
            epochs=train["epochs"],
            batch_size=train["batch_size"],
            learning_rate=cfg["optimizer"]["lr"],
            optimizer=cfg["optimizer"]["name"],
            optimizer_kwargs=optimizer_kwargs(cfg["optimizer"]),
            scheduler=cfg["scheduler"]["name"],
            scheduler_kwargs=scheduler_kwargs(cfg["scheduler"], train["epochs"]),
            validation_data=(x_val, y_val),
            callbacks=callbacks,
            verbose=verbose,
            seed=train["seed"],
            checkpoint_path=checkpoint,
            resume=train["resume"],
        )
        seconds = time.perf_counter() - start
    finally:
        if limits is not None:
            limits.unregister()
    if save_to is not None:
        save_to.parent.mkdir(parents=True, exist_ok=True)
        model.save(save_to)
    epochs_run = len(history["loss"])
    return TrainResult(
        framework=framework,
        model=model,
        history={k: [float(v) for v in vals] for k, vals in history.items()},
        train_time_s=seconds,
        samples_per_sec=len(x) * epochs_run / seconds if seconds > 0 else math.nan,
        epochs=train["epochs"],
        batch_size=train["batch_size"],
        model_path=save_to,
    )


def _torch_module(trainer: Any) -> Any:
    """The ``torch.nn.Module`` inside a torch trainer (or the module itself)."""
    return getattr(trainer, "model", trainer)


# ---------------------------------------------------------------------------------------------------------
# The training stages


def run_train_stage(
    framework: str,
    params: str | os.PathLike[str] = PARAMS_FILE,
    *,
    metrics_dir: str | os.PathLike[str] = METRICS_DIR,
    plots_dir: str | os.PathLike[str] = PLOTS_DIR,
    models_dir: str | os.PathLike[str] = MODELS_DIR,
    verbose: int = 1,
) -> TrainResult:
    """The ``train_<framework>`` DVC stage: ``params`` -> trained model, metrics, history, MLflow run.

    Writes ``<models_dir>/<fw>/model.{npz,pt}`` and ``mlflow_run.json``, ``<metrics_dir>/train_<fw>.json``
    ``{train_time_s, samples_per_sec, epochs, batch_size, final: {loss, accuracy, val_loss,
    val_accuracy}}`` and ``<plots_dir>/history_<fw>.json`` (one record per epoch: ``epoch, loss, accuracy,
    val_loss, val_accuracy, lr, epoch_time``), then prints one summary line.
    """
    cfg = load_params(params)
    result = train_from_config(cfg, framework, models_dir=models_dir, verbose=verbose)
    write_json(Path(metrics_dir) / f"train_{framework}.json", result.metrics())
    write_json(Path(plots_dir) / f"history_{framework}.json", result.history_records())
    final = result.final
    run = f", MLflow run {result.run_id}" if result.run_id else ""
    print(
        f"train_{framework}: {cfg['model']['name']} on {cfg['data']['name']}, {result.epochs} epochs x batch "
        f"{result.batch_size} in {result.train_time_s:.1f} s ({result.samples_per_sec:.0f} img/s): "
        f"val_accuracy {final.get('val_accuracy', math.nan):.4f}, "
        f"val_loss {final.get('val_loss', math.nan):.4f} -> {result.model_path}{run}",
        flush=True,
    )
    return result


# ---------------------------------------------------------------------------------------------------------
# Command line


def _compose_main(argv: list[str]) -> None:
    """``python -m cnn.pipeline compose [OVERRIDE ...]``: write params.yaml from conf/."""
    if not argv or argv[0] != "compose":
        raise ConfigError("usage: python -m cnn.pipeline compose [OVERRIDE ...]  (e.g. experiment=smoke)")
    overrides = argv[1:]
    cfg = compose_params(overrides)
    extra = f" with {' '.join(overrides)}" if overrides else ""
    print(
        f"params.yaml composed from {CONFIG_DIR}/{extra}: {cfg['data']['name']} "
        f"{cfg['data']['train_size']}/{cfg['data']['val_size']}, {cfg['model']['name']}, "
        f"{cfg['optimizer']['name']} lr={cfg['optimizer']['lr']:g}, scheduler {cfg['scheduler']['name']}, "
        f"{cfg['train']['epochs']} epochs x batch {cfg['train']['batch_size']}"
    )
