"""Trained models as MLflow models, for both frameworks: raw images in, logits out.

What a user has is raw MNIST: ``uint8`` pixels 0-255 (the IDX files, ``torchvision``'s ``.data``) or float
intensities 0-1, one image ``(H, W)`` or ``(C, H, W)`` each. The networks were trained on the preprocess
stage's normalised pixels, ``x = (pixel / 255 - mean) / std`` with ``mean`` and ``std`` of the training
subset (``<processed_dir>/stats.json``). The logged model applies that normalisation itself:

    predict(images) -> logits, float32 (N, num_classes)   (argmax: the class; softmax: probabilities)

    images: uint8 (or any integer dtype) 0..255, or float 0..1; shape (N, H, W) when C = 1, or (N, C, H, W)

Anything else is refused with one line naming what was expected and what was found
(:func:`prepare_images`); over HTTP (``mlflow models serve``) that line comes back as a 400 answer. A float
array outside [0, 1], e.g. the already normalised ``data/processed`` arrays, is refused rather than
silently misread.

Both frameworks are logged the same way, as a *models-from-code* pyfunc (no cloudpickle): the entry file
``image_classifier.py`` hands MLflow an :class:`ImageClassifier`, which reads

    input_spec.json   framework, input shape, mean and std of the training pixels, class count
    model.npz         NumPy: the weights, loaded by ``cnn.CNN.load`` (no pickle)
    model.pt2         torch: a ``torch.export`` program saved without its example inputs (the one part
                      ``torch.export.save`` pickles); its tensors are stored raw: no pickle on load

and the ``cnn`` package is bundled with the model (``code_paths``), so it loads wherever numpy and mlflow
(and torch, for the torch model) are installed. The signature records the output (float32 logits
``(-1, num_classes)``); the accepted inputs are the four forms above, which one tensor schema cannot
express (MLflow enforces a schema's dtype and rank exactly), so they are described in the model's
metadata (``metadata.input``) and the input example is five raw ``uint8`` ``(N, H, W)`` training images.

``import cnn`` does not import this module (it imports mlflow); torch is imported where used.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.pyfunc import PythonModel

from cnn.data.preprocess import normalize_images
from cnn.errors import DataError
from cnn.pipeline.tracking import MODEL_ARTIFACT_NAME, numpy_logits

__all__ = [
    "ImageClassifier",
    "InputSpec",
    "log_numpy_model",
    "log_torch_model",
    "prepare_images",
    "raw_pixels",
    "spec_for",
]

INPUT_SPEC_FILE = "input_spec.json"
ENTRY_FILE = "image_classifier.py"
WEIGHT_FILES = {"numpy": "model.npz", "torch": "model.pt2"}
PIXEL_MAX = 255

# The models-from-code entry file logged with every model: MLflow executes it on load (instead of
# unpickling an object); it imports the bundled cnn package.
_ENTRY_CODE = '''"""MLflow pyfunc entry point of a cnn image classifier (cnn.pipeline.logged_models).

predict(images): uint8 0-255 or float 0-1, (N, H, W) or (N, C, H, W) -> float32 logits (N, num_classes).
"""

import mlflow

from cnn.pipeline.logged_models import ImageClassifier

mlflow.models.set_model(ImageClassifier())
'''


@dataclass(frozen=True)
class InputSpec:
    """What a logged model needs to turn raw images into its training input (``input_spec.json``).

    Attributes:
        framework: ``"numpy"`` or ``"torch"``.
        input_shape: ``[C, H, W]`` of one image, as the network takes it.
        mean, std: of the training pixels scaled to [0, 1] (``stats.json``); ``x = (p - mean) / std``.
        num_classes: logits per image.
    """

    framework: str
    input_shape: tuple[int, int, int]
    mean: float
    std: float
    num_classes: int

    @classmethod
    def from_stats(
        cls, stats_path: str | Path, framework: str, input_shape: Sequence[int], num_classes: int
    ) -> InputSpec:
        """The spec of a model trained on the split whose ``stats.json`` is ``stats_path``.

        Raises:
            DataError: the file is missing, not JSON, or lacks a positive ``std`` / a ``mean``.
        """
        path = Path(stats_path)
        try:
            stats = json.loads(path.read_text())
            mean, std = float(stats["mean"]), float(stats["std"])
        except FileNotFoundError:
            raise DataError(f"{path}: not found; run the preprocess stage first") from None
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DataError(
                f"{path}: expected JSON with numbers mean and std, found an error ({err})"
            ) from None
        if not np.isfinite(mean) or not np.isfinite(std) or std <= 0:
            raise DataError(f"{path}: expected a finite mean and a positive std, found {mean} and {std}")
        c, h, w = (int(d) for d in input_shape)
        return cls(framework, (c, h, w), mean, std, int(num_classes))

    @classmethod
    def read(cls, path: str | Path) -> InputSpec:
        """Read an ``input_spec.json`` written by :meth:`write`."""
        raw = json.loads(Path(path).read_text())
        c, h, w = raw["input_shape"]
        return cls(raw["framework"], (c, h, w), raw["mean"], raw["std"], raw["num_classes"])

    def write(self, path: str | Path) -> Path:
        """Write the spec as JSON (with the formula, for a human reading the artifact)."""
        path = Path(path)
        doc = {**asdict(self), "input_shape": list(self.input_shape), "normalization": NORMALIZATION}
        path.write_text(json.dumps(doc, indent=2) + "\n")
        return path

    def accepted_shapes(self) -> str:
        """``(N, 28, 28) or (N, 1, 28, 28)``: the shapes :func:`prepare_images` takes, for messages."""
        c, h, w = self.input_shape
        full = f"(N, {c}, {h}, {w})"
        return f"(N, {h}, {w}) or {full}" if c == 1 else full


NORMALIZATION = "x = (pixel / 255 - mean) / std for uint8 pixels; x = (p - mean) / std for float p in [0, 1]"


def prepare_images(images: Any, spec: InputSpec) -> np.ndarray:
    """Raw images -> the network's input: float32 ``(N, C, H, W)``, normalised as in training.

    ``images``: integer pixels in 0..255 (``uint8``; JSON integers arrive as ``int64``) or float
    intensities in [0, 1], of shape ``(N, H, W)`` (when C = 1) or ``(N, C, H, W)``; a pandas DataFrame
    or nested lists are converted with ``np.asarray`` first. Integer pixels go through the same float32
    lookup table as the preprocess stage (``cnn.data.preprocess.normalize_images``): the result equals
    ``data/processed`` bit for bit.

    Raises:
        DataError: one line naming the accepted forms and what was found (dtype, shape, value range).
    """
    x = _as_array(images)
    c, h, w = spec.input_shape
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise DataError(
            f"model input: expected numeric pixels (uint8 0-255 or float 0-1), found dtype {x.dtype}"
        )
    if x.ndim == 3 and c == 1 and x.shape[1:] == (h, w):
        x = x[:, None]
    elif not (x.ndim == 4 and x.shape[1:] == (c, h, w)):
        raise DataError(f"model input: expected images of shape {spec.accepted_shapes()}, found {x.shape}")
    if x.size == 0:
        return np.zeros((0, c, h, w), dtype=np.float32)
    lo, hi = x.min(), x.max()
    if np.issubdtype(x.dtype, np.integer):
        if lo < 0 or hi > PIXEL_MAX:
            raise DataError(f"model input: integer pixels must lie in 0..{PIXEL_MAX}, found {lo}..{hi}")
        n = len(x)  # one lookup table for both: the preprocess stage's
        pixels = x.reshape(n * c, h, w).astype(np.intp, copy=False)
        return normalize_images(pixels, spec.mean, spec.std).reshape(n, c, h, w)
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise DataError("model input: found NaN or infinite pixels; expected float intensities in [0, 1]")
    if lo < 0 or hi > 1:
        raise DataError(
            f"model input: float pixels must lie in [0, 1], found {lo:.4g}..{hi:.4g}; send uint8 pixels "
            "0-255 or divide them by 255 (the model normalises by itself: do not send data/processed arrays)"
        )
    return ((x.astype(np.float64) - spec.mean) / spec.std).astype(np.float32)


def _as_array(images: Any) -> np.ndarray:
    to_numpy = getattr(images, "to_numpy", None)  # pandas DataFrame / Series, without importing pandas
    try:
        return np.asarray(to_numpy() if callable(to_numpy) else images)
    except (ValueError, TypeError) as err:  # ragged nested lists
        raise DataError(f"model input: expected a rectangular array of images, found {err}") from None


def raw_pixels(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    """Invert the preprocess normalisation: float32 ``(N, 1, H, W)`` -> the uint8 pixels ``(N, H, W)``.

    Exact for ``data/processed`` arrays (consecutive pixel values are ``1 / (255 std)`` apart, far above
    float32 rounding); values outside the pixel range are clipped (synthetic test data).
    """
    x = np.asarray(x, dtype=np.float64)
    pixels = np.rint((x * std + mean) * PIXEL_MAX)
    pixels = np.clip(pixels, 0, PIXEL_MAX).astype(np.uint8)
    return pixels[:, 0] if pixels.ndim == 4 and pixels.shape[1] == 1 else pixels


# ------------------------------------------------------------------------------------------------ the pyfunc
class ImageClassifier(PythonModel):
    """The pyfunc model: ``predict(images)`` -> float32 logits ``(N, num_classes)`` (see the module doc).

    ``load_context`` reads ``input_spec.json`` and the weights; ``predict`` checks and normalises the
    images (:func:`prepare_images`) and runs the eval-mode forward pass on the CPU.
    """

    model: Any  # cnn.CNN, or the torch.export program's module
    dtype: Any  # the torch module's parameter dtype

    def load_context(self, context: Any) -> None:
        self.spec = InputSpec.read(context.artifacts["input_spec"])
        weights = context.artifacts["weights"]
        if self.spec.framework == "numpy":
            from cnn.model import CNN

            self.model = CNN.load(weights)  # npz, no pickle; returned in eval mode
        else:
            import torch

            self.model = torch.export.load(weights).module()
            self.dtype = next(self.model.parameters()).dtype

    # ``np.ndarray``: a hint MLflow infers no schema from (any other hint, or none, makes it warn).
    def predict(self, context: Any, model_input: np.ndarray, params: Any = None) -> np.ndarray:
        try:
            x = prepare_images(model_input, self.spec)
        except DataError as err:
            from mlflow.exceptions import MlflowException

            raise MlflowException.invalid_parameter_value(str(err)) from None
        if self.spec.framework == "numpy":
            return numpy_logits(self.model, x)
        import torch

        if len(x) == 0:
            return np.zeros((0, self.spec.num_classes), dtype=np.float32)
        with torch.no_grad():
            return self.model(torch.from_numpy(x).to(self.dtype)).float().numpy()


# ------------------------------------------------------------------------------------------------ logging
def log_numpy_model(model: Any, spec: InputSpec, input_example: Any, name: str = MODEL_ARTIFACT_NAME) -> Any:
    """Log a NumPy ``cnn.CNN`` as the pyfunc :class:`ImageClassifier` (weights in ``model.npz``).

    ``input_example``: raw images (uint8 ``(N, H, W)``, see :func:`raw_pixels`), recorded with the model.

    Returns:
        mlflow.models.model.ModelInfo of the logged model (``model_uri``, ``model_id``).
    """
    with tempfile.TemporaryDirectory(prefix="cnn-mlflow-") as tmp:
        weights = model.save(Path(tmp) / WEIGHT_FILES["numpy"])
        return _log(spec, weights, input_example, name, ("numpy", "tqdm", "mlflow"))


def log_torch_model(module: Any, spec: InputSpec, input_example: Any, name: str = MODEL_ARTIFACT_NAME) -> Any:
    """Log a ``torch.nn.Module`` (TorchCNN) as the pyfunc :class:`ImageClassifier` (``model.pt2``).

    The module is exported with ``torch.export`` in eval mode from a CPU copy, with a dynamic batch
    dimension; a ``torch.compile``-d module is unwrapped first; the caller's module is left as it was.

    Returns:
        mlflow.models.model.ModelInfo of the logged model.
    """
    import torch

    module = getattr(module, "_orig_mod", module)  # torch.compile wraps the module
    cpu_model = copy.deepcopy(module).to("cpu").eval()
    x = prepare_images(_example(input_example), spec)
    x = np.concatenate([x, x]) if len(x) < 2 else x  # torch.export specialises a batch of 1 to a constant
    dtype = next(cpu_model.parameters()).dtype
    example = torch.from_numpy(x).to(dtype)
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(cpu_model, (example,), dynamic_shapes=({0: batch},))
    # torch.export.save pickles the example inputs (torch.load on the way back, with a fallback to a full
    # unpickler); the model does not need them, so they are not saved and loading unpickles nothing.
    program.example_inputs = None
    with tempfile.TemporaryDirectory(prefix="cnn-mlflow-") as tmp:
        weights = Path(tmp) / WEIGHT_FILES["torch"]
        with warnings.catch_warnings():
            # torch.export.save's weight grouping, harmless: every tensor is saved whole.
            warnings.filterwarnings("ignore", message=".*No complete tensor found in the group")
            torch.export.save(program, weights)
        return _log(spec, weights, input_example, name, ("torch", "numpy", "mlflow"))


def _example(input_example: Any) -> np.ndarray:
    """At most 5 images of the raw input example."""
    return np.ascontiguousarray(np.asarray(input_example)[:5])


def _log(spec: InputSpec, weights: Path, input_example: Any, name: str, packages: Sequence[str]) -> Any:
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    example = _example(input_example)
    prepare_images(example, spec)  # a bad example fails here, with its own message
    signature = ModelSignature(outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, spec.num_classes))]))
    with tempfile.TemporaryDirectory(prefix="cnn-mlflow-") as tmp:
        tmp_path = Path(tmp)
        code_file = tmp_path / ENTRY_FILE
        code_file.write_text(_ENTRY_CODE)
        spec_file = spec.write(tmp_path / INPUT_SPEC_FILE)
        package = Path(__file__).resolve().parents[1]  # the whole cnn package
        bundled = tmp_path / "code" / package.name
        shutil.copytree(package, bundled, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        # MLflow says "Validating input example against model signature" at INFO for every model logged
        # (a failed validation still warns): quiet for that call only.
        pyfunc_logger = logging.getLogger("mlflow.pyfunc")
        level = pyfunc_logger.level
        pyfunc_logger.setLevel(max(level, logging.WARNING))
        try:
            return mlflow.pyfunc.log_model(
                name=name,
                python_model=str(code_file),
                artifacts={"weights": str(weights), "input_spec": str(spec_file)},
                code_paths=[str(bundled)],
                signature=signature,
                input_example=example,
                metadata={
                    "input": input_description(spec),
                    "normalization": NORMALIZATION,
                    "framework": spec.framework,
                },
                pip_requirements=_requirements(*packages),
            )
        finally:
            pyfunc_logger.setLevel(level)


def input_description(spec: InputSpec) -> str:
    """One line: the inputs the logged model accepts (recorded in its metadata)."""
    return (
        f"raw images, uint8 pixels 0-{PIXEL_MAX} or float 0-1, shape {spec.accepted_shapes()}; "
        f"normalised by the model (mean {spec.mean:.6g}, std {spec.std:.6g})"
    )


def _requirements(*packages: str) -> list[str]:
    """Pinned pip requirements of the installed ``packages`` (skipping any that are not installed).

    Given explicitly, so MLflow does not spend seconds inferring them in a subprocess.
    """
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in packages:
        try:
            pins.append(f"{package}=={version(package).split('+', 1)[0]}")
        except PackageNotFoundError:
            continue
    return pins


def spec_for(cfg: Mapping[str, Any], framework: str) -> InputSpec:
    """The :class:`InputSpec` of a model trained from ``cfg`` (``data.processed_dir``, ``model``)."""
    from cnn.pipeline.paths import PipelinePaths

    model = cfg["model"]
    stats = PipelinePaths.from_config(cfg).stats
    return InputSpec.from_stats(stats, framework, model["input_shape"], model["num_classes"])
