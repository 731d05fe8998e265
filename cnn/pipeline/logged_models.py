"""Trained models as MLflow models: what a training run logs besides its metrics.

- :func:`log_numpy_model` -- a NumPy ``cnn.CNN`` as a pyfunc model (models-from-code: loading runs a small
  code file and reads ``.npz`` weights, no pickle); ``predict`` is :func:`cnn.pipeline.tracking.numpy_logits`.
- :func:`log_torch_model` -- a ``TorchCNN`` via ``mlflow.pytorch`` (torch.export "pt2", no pickle).

mlflow and torch are imported inside the functions: ``import cnn`` stays light.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from cnn.errors import TrackingError
from cnn.pipeline.tracking import MODEL_ARTIFACT_NAME, numpy_logits

__all__ = ["log_numpy_model", "log_torch_model"]

# The models-from-code file logged with every NumPy model. MLflow executes it when the model is loaded
# (instead of unpickling an object), and `set_model` hands it the wrapper.
_NUMPY_PYFUNC_CODE = '''"""MLflow pyfunc entry point of a NumPy `cnn.CNN` (logged_models.log_numpy_model).

predict(x): x float32 (N, C, H, W) -> logits float32 (N, num_classes), the eval-mode forward pass.
"""

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class NumpyCNNModel(PythonModel):
    def load_context(self, context):
        from cnn.model import CNN

        self.model = CNN.load(context.artifacts["weights"])  # npz, no pickle; returned in eval mode

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        from cnn.pipeline.tracking import numpy_logits

        return numpy_logits(self.model, model_input)


mlflow.models.set_model(NumpyCNNModel())
'''


def _example_batch(input_example: Any, dtype: Any) -> np.ndarray:
    """The input example as a C-contiguous (N, C, H, W) array of ``dtype`` with N >= 2.

    N >= 2 because torch.export specialises a batch dimension of size 1 to a constant.
    """
    x = np.ascontiguousarray(np.asarray(input_example, dtype=dtype))
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise TrackingError(f"input_example: expected an (N, C, H, W) array, found shape {x.shape}")
    if x.shape[0] < 2:
        x = np.concatenate([x, x], axis=0)
    return x[:5]


def log_numpy_model(model: Any, input_example: Any, name: str = MODEL_ARTIFACT_NAME) -> Any:
    """Log a NumPy ``cnn.CNN`` as an MLflow pyfunc model (models-from-code; weights in ``.npz``).

    ``mlflow.pyfunc.load_model(info.model_uri).predict(x)`` returns ``numpy_logits(model, x)``:
    float32 logits (N, num_classes) for float32 x (N, C, H, W). The model bundles the ``cnn`` package
    (code_paths), so it loads where only numpy, tqdm and mlflow are installed.

    Returns:
        mlflow.models.model.ModelInfo of the logged model (``model_uri``, ``model_id``).
    """
    import mlflow
    from mlflow.models import infer_signature

    x = _example_batch(input_example, model.dtype)
    signature = infer_signature(x, numpy_logits(model, x))
    with tempfile.TemporaryDirectory(prefix="cnn-mlflow-") as tmp:
        tmp_path = Path(tmp)
        weights = model.save(tmp_path / "model.npz")
        code_file = tmp_path / "numpy_cnn_pyfunc.py"
        code_file.write_text(_NUMPY_PYFUNC_CODE)
        package = Path(__file__).resolve().parents[1]  # the whole cnn package
        bundled = tmp_path / "code" / package.name
        shutil.copytree(package, bundled, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(code_file),
            artifacts={"weights": str(weights)},
            code_paths=[str(bundled)],
            signature=signature,
            input_example=x,
            pip_requirements=_requirements("numpy", "tqdm", "mlflow"),
        )


def log_torch_model(model: Any, input_example: Any, name: str = MODEL_ARTIFACT_NAME) -> Any:
    """Log a ``torch.nn.Module`` (TorchCNN) with ``mlflow.pytorch.log_model``, signature and input example.

    The model is exported in eval mode from a CPU copy (torch.export, "pt2": loading executes no pickle),
    with a dynamic batch dimension; ``predict(x)`` returns its ``forward``: float32 logits
    (N, num_classes). A ``torch.compile``-d module is unwrapped first.

    Returns:
        mlflow.models.model.ModelInfo of the logged model.
    """
    import copy

    import mlflow
    import torch
    from mlflow.models import infer_signature

    module = getattr(model, "_orig_mod", model)  # torch.compile wraps the module
    cpu_model = copy.deepcopy(module).to("cpu").eval()
    dtype = next(cpu_model.parameters()).dtype
    x = _example_batch(input_example, torch.empty((), dtype=dtype).numpy().dtype)
    with torch.no_grad():
        logits = cpu_model(torch.from_numpy(x)).numpy()
    signature = infer_signature(x, logits)
    return mlflow.pytorch.log_model(
        cpu_model,
        name=name,
        signature=signature,
        input_example=x,
        serialization_format="pt2",
        pip_requirements=_requirements("torch", "numpy", "mlflow"),
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
