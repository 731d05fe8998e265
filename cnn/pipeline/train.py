"""Training from a config: what the ``train_numpy`` / ``train_torch`` stages and the sweep's jobs run.

- :func:`train_from_config` -- train one framework from a config: load the processed splits, build the
  network, fit with per-epoch MLflow logging and a resume checkpoint, save the model and its run pointer.
- :func:`run_train_stage` -- the training stage: :func:`train_from_config` plus its metrics and history.
- :func:`optimizer_kwargs`, :func:`scheduler_kwargs` -- the optimizer and scheduler groups as the keyword
  arguments of ``make_optimizer`` / ``make_scheduler`` (the keys each name reads come from their registries).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnn.errors import ConfigError
from cnn.pipeline.config import FRAMEWORKS, arch_config, train_config_for, validate_config
from cnn.pipeline.files import write_json
from cnn.pipeline.params import load_params
from cnn.pipeline.paths import PARAMS_FILE, PipelinePaths, checkpoint_path, model_path

__all__ = [
    "TrainResult",
    "optimizer_kwargs",
    "run_train_stage",
    "scheduler_kwargs",
    "train_from_config",
]


def optimizer_kwargs(optimizer: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``make_optimizer(name, params, lr, **kw)`` read from an optimizer group.

    Only the keys the named optimizer reads: SGD ``momentum, nesterov, weight_decay``; Adam and AdamW
    ``betas, eps, weight_decay``.
    """
    from cnn.optimizers import OPTIMIZER_KEYS

    kw = {k: optimizer[k] for k in OPTIMIZER_KEYS[optimizer["name"]]}
    if "betas" in kw:
        kw["betas"] = tuple(kw["betas"])
    return kw


def scheduler_kwargs(scheduler: Mapping[str, Any], epochs: int) -> dict[str, Any]:
    """The keyword arguments of ``make_scheduler(name, opt, **kw)`` read from a scheduler group.

    ``step``: step_size, gamma; ``exponential``: gamma; ``cosine``: T_max (null = ``epochs``), eta_min;
    ``plateau``: mode, factor, patience; every scheduler: warmup_epochs when > 0.
    """
    from cnn.schedulers import SCHEDULER_KEYS

    name = scheduler["name"]
    kw = {k: scheduler[k] for k in SCHEDULER_KEYS[name]}
    if name == "cosine" and kw["T_max"] is None:
        kw["T_max"] = epochs
    if scheduler["warmup_epochs"]:
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
    models_dir: str | os.PathLike[str] | None = "",
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
        models_dir: parent folder of the saved model (default ``paths.models_dir``); None saves nothing.
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
    save_to = model_path(framework, models_dir or None, cfg) if models_dir is not None else None
    checkpoint = checkpoint_path(cfg, train, framework)
    data = (x, y, x_val, y_val)
    if not track:
        return _fit(cfg, train, framework, data, list(callbacks), checkpoint, save_to, verbose)

    from cnn.pipeline import logged_models, tracking

    spec = logged_models.spec_for(cfg, framework)  # the model's own normalisation: checked before training
    with tracking.start_training_run(cfg, framework, nested=nested, run_name=run_name) as run:
        tracking.log_datasets(cfg, {"train": (x, y), "val": (x_val, y_val)})
        cbs = [tracking.MLflowCallback(run.info.run_id), *callbacks]
        result = _fit(cfg, train, framework, data, cbs, checkpoint, save_to, verbose)
        result.run_id = run.info.run_id
        summary = result.metrics()  # MLflow gets the numbers of metrics/train_<framework>.json
        tracking.log_run_summary(
            run.info.run_id,
            {key: summary[key] for key in ("train_time_s", "samples_per_sec")},
            step=len(result.history.get("loss", [])),
        )
        example = logged_models.raw_pixels(x[:5], spec.mean, spec.std)  # what a user sends: raw images
        if framework == "numpy":
            logged_models.log_numpy_model(result.model, spec, example)
        else:
            logged_models.log_torch_model(_torch_module(result.model), spec, example)
        if save_to is not None:
            tracking.log_artifact(save_to, artifact_path="checkpoint")
            tracking.write_run_pointer(save_to.parent / cfg["paths"]["run_pointer"], run)
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


def run_train_stage(
    framework: str,
    params: str | os.PathLike[str] = PARAMS_FILE,
    *,
    track: bool = True,
    verbose: int = 1,
) -> TrainResult:
    """The ``train_<framework>`` DVC stage: ``params`` -> trained model, metrics, history, MLflow run.

    Writes (names from the ``paths`` group) ``models/<fw>/model.{npz,pt}`` and ``mlflow_run.json``,
    ``metrics/train_<fw>.json`` ``{train_time_s, samples_per_sec, epochs, batch_size, final: {loss,
    accuracy, val_loss, val_accuracy}}`` and ``plots/history_<fw>.json`` (one record per epoch: ``epoch,
    loss, accuracy, val_loss, val_accuracy, lr, epoch_time``), then prints one summary line.
    """
    cfg = load_params(params)
    paths = PipelinePaths.from_config(cfg)
    result = train_from_config(cfg, framework, models_dir=paths.models_dir, track=track, verbose=verbose)
    write_json(paths.train_metrics(framework), result.metrics())
    write_json(paths.history(framework), result.history_records())
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
