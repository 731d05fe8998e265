"""The PyTorch twin of the NumPy ``CNN``: the same function, weight-compatible both ways.

``TorchCNN`` takes the same constructor arguments as :class:`cnn.model.CNN` and builds its layers from the
same :func:`cnn.architecture.build_spec`, inside two ``nn.Sequential`` named ``features`` and
``classifier``. Its ``state_dict`` keys therefore equal the NumPy model's (``features.0.weight``,
``features.1.running_mean``, ``classifier.5.bias``, ...), BatchNorm's ``num_batches_tracked`` included.

Initialisation follows the NumPy layers' scheme (same distribution, not the same numbers):

    conv / dense weight ~ N(0, 2 / fan_in)     (He-normal, fan_in = in_channels * k * k or in_features)
    bias = 0;  BatchNorm weight = 1, bias = 0, running_mean = 0, running_var = 1

:func:`to_torch` and :func:`to_numpy` copy weights and BatchNorm buffers between the two and keep the dtype;
in eval mode their logits agree to float rounding (float32: 2e-4, float64: 1e-10, see the tests).

Checkpoints (``.pt``) are a plain dict ``{"format", "arch", "dtype", "seed", "state_dict"}`` written
atomically with ``torch.save`` and read back with ``torch.load(weights_only=True)``: no pickled code on the
load path. Every way a file can be wrong raises :class:`cnn.errors.CheckpointError` naming the file and
the problem.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

# cuBLAS is only deterministic with a fixed workspace; the variable must be set before the CUDA context
# exists, and importing this module (which imports torch) never creates one. Respect a user's own value.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import numpy as np
import torch
from torch import nn

from cnn.architecture import ArchConfig, LayerSpec, build_spec
from cnn.atomic import atomic_open
from cnn.errors import CheckpointError, ConfigError
from cnn.training import History, check_run_key

if TYPE_CHECKING:  # pragma: no cover
    from cnn.model import CNN

CHECKPOINT_FORMAT = "cnn.TorchCNN/1"
"""Format tag stored under ``"format"`` in every ``.pt`` checkpoint this module writes."""

_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}


def resolve_dtype(dtype: Any) -> torch.dtype:
    """``torch.float32``/``float64`` from a torch dtype, a NumPy dtype (``np.float32``) or a name."""
    if isinstance(dtype, torch.dtype):
        name = str(dtype).removeprefix("torch.")
    else:
        try:
            name = np.dtype(dtype).name
        except TypeError as exc:
            raise ConfigError(f"dtype must be float32 or float64, got {dtype!r}") from exc
    if name not in _DTYPES:
        raise ConfigError(f"dtype must be float32 or float64, got {name}")
    return _DTYPES[name]


def numpy_dtype(dtype: torch.dtype) -> np.dtype:
    """The NumPy dtype of a floating torch dtype (``torch.float64`` -> ``np.float64``)."""
    return np.dtype(str(dtype).removeprefix("torch."))


def _make_layer(spec: LayerSpec) -> nn.Module:
    kw = spec.kwargs
    if spec.kind == "conv2d":
        return nn.Conv2d(**kw)
    if spec.kind == "batchnorm2d":
        return nn.BatchNorm2d(**kw)
    if spec.kind == "batchnorm1d":
        return nn.BatchNorm1d(**kw)
    if spec.kind == "relu":
        return nn.ReLU()
    if spec.kind == "maxpool2d":
        return nn.MaxPool2d(**kw)
    if spec.kind == "dropout2d":
        return nn.Dropout2d(**kw)
    if spec.kind == "dropout":
        return nn.Dropout(**kw)
    if spec.kind == "flatten":
        return nn.Flatten()
    if spec.kind == "dense":
        return nn.Linear(**kw)
    raise ConfigError(f"unknown layer kind {spec.kind!r} in the architecture spec")


class TorchCNN(nn.Module):
    """The seed CNN in PyTorch, built from the same :class:`ArchConfig` as the NumPy ``CNN``.

    Args: the fields of :class:`cnn.architecture.ArchConfig` (``input_shape``, ``num_classes``,
    ``use_batchnorm``, ``dropout_rate``, ``conv_channels``, ``kernel_size``, ``dense_units``,
    ``dense_dropout``), ``dtype`` (float32 or float64; NumPy, torch or string) and ``seed`` for the
    initial weights (a private ``torch.Generator``: the global torch RNG is left alone).

    ``forward(x)``: ``x`` of shape ``(N, C, H, W)`` and the model's dtype -> logits ``(N, num_classes)``.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int = 10,
        use_batchnorm: bool = True,
        dropout_rate: float = 0.25,
        conv_channels: tuple[tuple[int, ...], ...] = ((32, 32), (64, 64)),
        kernel_size: int = 3,
        dense_units: tuple[int, ...] = (128,),
        dense_dropout: float = 0.5,
        dtype: Any = np.float32,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ConfigError(f"TorchCNN seed must be a non-negative int, got {seed!r}")
        self.seed = int(seed)
        self.config = ArchConfig(
            input_shape=input_shape,
            num_classes=num_classes,
            use_batchnorm=use_batchnorm,
            dropout_rate=dropout_rate,
            conv_channels=conv_channels,
            kernel_size=kernel_size,
            dense_units=dense_units,
            dense_dropout=dense_dropout,
        )
        spec = build_spec(self.config)
        self.features = nn.Sequential(*(_make_layer(s) for s in spec["features"]))
        self.classifier = nn.Sequential(*(_make_layer(s) for s in spec["classifier"]))
        self.reset_parameters(self.seed)
        self.to(resolve_dtype(dtype))

    @classmethod
    def from_config(cls, arch: ArchConfig | Mapping[str, Any], **kwargs: Any) -> TorchCNN:
        """Build from an :class:`ArchConfig` or its dict (the ``model`` config: its ``name`` key is ignored);
        ``kwargs`` are ``dtype`` and ``seed``. Unknown keys raise :class:`ConfigError` naming them."""
        fields = arch.to_dict() if isinstance(arch, ArchConfig) else dict(arch)
        fields.pop("name", None)
        unknown = sorted(set(fields) - set(ArchConfig.__dataclass_fields__))
        if unknown:
            raise ConfigError(
                f"unknown model config key {unknown[0]!r}; allowed: {sorted(ArchConfig.__dataclass_fields__)}"
            )
        return cls(**fields, **kwargs)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def reset_parameters(self, seed: int = 0) -> None:
        """He-normal weights ``N(0, 2 / fan_in)``, zero biases, BatchNorm ones/zeros and fresh statistics.

        Drawn in float64 from a ``torch.Generator`` seeded with ``seed``, then cast, so float32 and
        float64 models with the same seed start from the same (rounded) weights.
        """
        gen = torch.Generator().manual_seed(int(seed))
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                fan_in = module.weight[0].numel()  # in_channels * kh * kw, or in_features
                w = torch.empty(module.weight.shape, dtype=torch.float64)
                w.normal_(0.0, math.sqrt(2.0 / fan_in), generator=gen)
                module.weight.copy_(w)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
                module.reset_parameters()  # weight 1, bias 0, running_mean 0, running_var 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_dict(self) -> dict[str, Any]:
        """The plain dict a ``.pt`` file holds: format tag, architecture, dtype, seed, CPU state_dict."""
        return {
            "format": CHECKPOINT_FORMAT,
            "arch": self.config.to_dict(),
            "dtype": str(self.dtype).removeprefix("torch."),
            "seed": self.seed,
            "state_dict": {k: v.detach().cpu().clone() for k, v in self.state_dict().items()},
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the checkpoint to ``path`` atomically (temporary file in the same folder, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save(self.checkpoint_dict(), path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> TorchCNN:
        """Rebuild the model a ``.pt`` checkpoint describes and load its weights.

        Raises :class:`CheckpointError` when the file is missing, unreadable, not ours, or inconsistent.
        """
        ckpt = read_checkpoint(path, map_location=map_location)
        try:
            model = cls.from_config(ckpt["arch"], dtype=ckpt["dtype"], seed=ckpt.get("seed", 0))
        except (ConfigError, TypeError) as exc:
            raise CheckpointError(f"{path}: invalid architecture in checkpoint: {exc}") from exc
        load_state_dict_checked(model, ckpt["state_dict"], source=str(path))
        return model.to(map_location)

    def load_weights(self, path: str | os.PathLike[str]) -> TorchCNN:
        """Load a checkpoint's weights into this model; a different architecture raises
        :class:`CheckpointError` naming the first mismatched key and both shapes."""
        ckpt = read_checkpoint(path, map_location="cpu")
        load_state_dict_checked(self, ckpt["state_dict"], source=str(path))
        return self


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save(obj)`` through :func:`cnn.atomic.atomic_open`: a reader never sees half a file."""
    with atomic_open(path) as fh:
        torch.save(obj, fh)


def safe_torch_load(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)``; any failure to read becomes one :class:`CheckpointError` line."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        # Truncated zips, random bytes, pickles that reach for a global weights_only refuses: torch raises
        # RuntimeError, EOFError, UnpicklingError, BadZipFile, ... all of which mean "not a usable file".
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_first_line(exc)})") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    detail = text[0] if text else ""
    if len(detail) > 200:
        detail = detail[:200] + "..."
    return f"{type(exc).__name__}: {detail}"


def read_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate a TorchCNN ``.pt`` file: a dict with our format tag, an ``arch`` dict, a dtype
    name and a ``state_dict`` of tensors."""
    obj = safe_torch_load(path, map_location=map_location)
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        found = f"keys {sorted(map(str, obj))[:6]}" if isinstance(obj, dict) else f"a {type(obj).__name__}"
        raise CheckpointError(
            f"{path}: not a TorchCNN checkpoint (expected a dict with format={CHECKPOINT_FORMAT!r}, "
            f"found {found})"
        )
    for key, kind in (("arch", dict), ("dtype", str), ("state_dict", dict)):
        if not isinstance(obj.get(key), kind):
            raise CheckpointError(
                f"{path}: checkpoint key {key!r} should be a {kind.__name__}, "
                f"found {type(obj.get(key)).__name__}"
            )
    seed = obj.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise CheckpointError(f"{path}: checkpoint seed must be a non-negative int, found {seed!r}")
    if obj["dtype"] not in _DTYPES:
        raise CheckpointError(f"{path}: checkpoint dtype must be float32 or float64, found {obj['dtype']!r}")
    bad = [k for k, v in obj["state_dict"].items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: state_dict entry {bad[0]!r} is not a tensor")
    return obj


def load_state_dict_checked(
    model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "state_dict"
) -> None:
    """``model.load_state_dict(state)`` after checking keys and shapes, so a mismatch raises
    :class:`CheckpointError` naming the first missing / unexpected / differently shaped key.

    BatchNorm's ``num_batches_tracked`` may be absent (state dicts converted from elsewhere may lack it).
    """
    expected = model.state_dict()
    optional = {k for k in expected if k.endswith("num_batches_tracked")}
    missing = [k for k in expected if k not in state and k not in optional]
    unexpected = [k for k in state if k not in expected]
    if missing:
        raise CheckpointError(f"{source}: missing key {missing[0]!r} ({len(missing)} missing in all)")
    if unexpected:
        raise CheckpointError(
            f"{source}: unexpected key {unexpected[0]!r} ({len(unexpected)} unexpected in all)"
        )
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"{source}: shape mismatch for {key!r}: model has {tuple(expected[key].shape)}, "
                f"checkpoint has {tuple(value.shape)}"
            )
    model.load_state_dict(dict(state), strict=False)


# ---------------------------------------------------------------------------- transfer between frameworks
def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> the first available of cuda, mps, cpu; otherwise ``torch.device(device)``, checked.

    Raises :class:`ConfigError` for an unknown name or a device this machine does not have.
    """
    if isinstance(device, torch.device):
        dev = device
    elif device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ConfigError(
                f"train.device: unknown device {device!r}; use auto, cpu, cuda[:i] or mps"
            ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device is {device!r} but CUDA is not available on this machine")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"train.device is {device!r} but MPS is not available on this machine")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"train.device: unsupported device type {dev.type!r}; use auto, cpu, cuda or mps")
    return dev


def default_threads() -> int:
    """All cores this process may run on (its CPU affinity, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def configure_torch(threads: int | None = None, deterministic: bool = True) -> None:
    """Process-wide torch settings for reproducible runs.

    ``threads``: intra-op CPU threads (None = all cores). ``deterministic``: ``torch.use_deterministic_
    algorithms(True)`` and cuDNN's deterministic, non-benchmarking mode; ``CUBLAS_WORKSPACE_CONFIG`` was
    already set when :mod:`cnn.torch_model` was imported, before any CUDA context could exist.
    """
    if threads is not None and (isinstance(threads, bool) or int(threads) < 1):
        raise ConfigError(f"train.threads must be a positive int or null (= all cores), got {threads!r}")
    n = default_threads() if threads is None else int(threads)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    if torch.are_deterministic_algorithms_enabled() != bool(deterministic):  # the first switch costs ~2 s
        torch.use_deterministic_algorithms(bool(deterministic))
    torch.backends.cudnn.deterministic = bool(deterministic)
    torch.backends.cudnn.benchmark = not deterministic
    if deterministic and torch.cuda.is_initialized() and "CUBLAS_WORKSPACE_CONFIG" not in os.environ:
        warnings.warn(  # only reachable if something removed the variable after import
            "CUDA was initialised without CUBLAS_WORKSPACE_CONFIG; cuBLAS results may not be deterministic",
            stacklevel=2,
        )


# --------------------------------------------------------------------------------- resume checkpoints
#: Format tag of the ``.pt`` resume checkpoints written by :meth:`cnn.torch_train.TorchTrainer.fit`.
RESUME_FORMAT = "cnn.TorchTrainer.resume/1"


def save_resume(
    model: TorchCNN,
    path: Path,
    opt: torch.optim.Optimizer,
    sched: Any,
    run_key: dict[str, Any],
    history: History,
    epoch: int,
    batch: int,
    partial: dict[str, float] | None,
    device: torch.device,
) -> None:
    """Write ``TorchTrainer.fit``'s resume checkpoint: the model checkpoint plus ``epoch`` epochs completed
    and ``batch`` batches of the next (with the epoch's ``partial`` sums), optimizer and scheduler states,
    the torch RNG states (CPU, and ``device``'s when it is a GPU), the history and the ``run_key``."""
    rng = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    state = model.checkpoint_dict()
    state.update(
        {
            "resume_format": RESUME_FORMAT,
            "epoch": epoch,
            "batch": batch,
            "partial": partial,
            "history": {k: list(v) for k, v in history.items()},
            "rng": rng,
            "optimizer": _to_cpu(opt.state_dict()),
            "scheduler": None if sched is None else sched.state_dict(),
            "run": run_key,
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(state, path)


def restore_resume(
    model: TorchCNN,
    path: Path,
    opt: torch.optim.Optimizer,
    sched: Any,
    run_key: dict[str, Any],
    device: torch.device,
) -> tuple[int, int, dict[str, float] | None, History]:
    """Load a resume checkpoint into ``model``, ``opt``, ``sched`` and the torch RNGs; return
    ``(start_epoch, start_batch, partial, history)``. :class:`CheckpointError` for a model-only file,
    another model, another run set-up (:func:`cnn.training.check_run_key`) or a malformed state."""
    ckpt = read_checkpoint(path)
    if ckpt.get("resume_format") != RESUME_FORMAT:
        raise CheckpointError(
            f"{path}: a model checkpoint, not a resume checkpoint (no resume_format={RESUME_FORMAT!r})"
        )
    mine = model.config.to_dict()
    if ckpt["arch"] != mine or ckpt["dtype"] != str(model.dtype).removeprefix("torch."):
        raise CheckpointError(
            f"{path}: checkpoint is of another model ({ckpt['arch']}, {ckpt['dtype']}); this model is "
            f"({mine}, {str(model.dtype).removeprefix('torch.')})"
        )
    try:
        check_run_key(ckpt["run"], run_key, path)
        epoch, batch, partial = int(ckpt["epoch"]), int(ckpt["batch"]), ckpt["partial"]
        history = History(ckpt["history"])
        load_state_dict_checked(model, ckpt["state_dict"], source=str(path))
        opt.load_state_dict(ckpt["optimizer"])
        if sched is not None:
            sched.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng"]["cpu"])
        if device.type == "cuda" and "cuda" in ckpt["rng"]:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], device)
    except (KeyError, TypeError, AttributeError, ValueError, RuntimeError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{path}: malformed resume state ({type(exc).__name__}: {exc})") from None
    return epoch + 1, batch, partial, history


def _to_cpu(tree: Any) -> Any:
    """A copy of a nested state with every tensor moved to the CPU (checkpoints load on any machine)."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().cpu().clone()
    if isinstance(tree, dict):
        return {k: _to_cpu(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(_to_cpu(v) for v in tree)
    return tree


def to_torch(numpy_cnn: CNN, device: str | torch.device = "cpu") -> TorchCNN:
    """A :class:`TorchCNN` with the architecture, dtype, weights and BatchNorm buffers of ``numpy_cnn``.

    The train/eval mode is copied too. The arrays are copied, not shared.
    """
    model = TorchCNN.from_config(numpy_cnn.config, dtype=numpy_cnn.dtype, seed=getattr(numpy_cnn, "seed", 0))
    state = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in numpy_cnn.state_dict().items()}
    load_state_dict_checked(model, state, source="to_torch(CNN.state_dict())")
    model.train(bool(getattr(numpy_cnn, "training", True)))
    return model.to(device)


def to_numpy(torch_cnn: TorchCNN) -> CNN:
    """A NumPy :class:`cnn.model.CNN` with the architecture, dtype, weights and BatchNorm buffers of
    ``torch_cnn`` (copied to the CPU). The train/eval mode is copied too."""
    from cnn.model import CNN  # imported here: cnn.model must not import torch, and this keeps it lazy

    model = CNN.from_config(torch_cnn.config, dtype=numpy_dtype(torch_cnn.dtype), seed=torch_cnn.seed)
    state = {k: v.detach().cpu().numpy().copy() for k, v in torch_cnn.state_dict().items()}
    model.load_state_dict(state, source="to_numpy(TorchCNN.state_dict())")
    if torch_cnn.training:
        model.train()
    else:
        model.eval()
    return model
