"""cnn: a convolutional neural network library written from scratch in NumPy.

    from cnn import CNN
    model = CNN(input_shape=(1, 28, 28), num_classes=10)
    history = model.fit(X_train, y_train, epochs=5, validation_data=(X_val, y_val))

``import cnn`` loads NumPy-only modules: the PyTorch twin (:mod:`cnn.torch_model`), tracking and plotting
are imported explicitly by those who need them.

Importing ``cnn`` before NumPy lets it choose the fastest OpenBLAS kernels for this CPU (see
:mod:`cnn.blas`).
"""

from cnn.blas import select_openblas_kernels

select_openblas_kernels()  # before anything imports NumPy: OpenBLAS reads its kernel choice when loaded

from cnn.architecture import ArchConfig, build_spec  # noqa: E402  (after the BLAS choice)
from cnn.errors import (  # noqa: E402
    CheckpointError,
    CNNError,
    ConfigError,
    DataError,
    TrackingError,
    TrainingDivergedError,
)
from cnn.model import CNN, Sequential  # noqa: E402
from cnn.training import History, TrainingInterrupted  # noqa: E402

__all__ = [
    "CNN",
    "ArchConfig",
    "CNNError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "History",
    "Sequential",
    "TrackingError",
    "TrainingDivergedError",
    "TrainingInterrupted",
    "build_spec",
]

__version__ = "0.1.0"
