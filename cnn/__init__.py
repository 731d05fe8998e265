"""cnn: a convolutional neural network library written from scratch in NumPy.

    from cnn import CNN
    model = CNN(input_shape=(1, 28, 28), num_classes=10)
    history = model.fit(X_train, y_train, epochs=5, validation_data=(X_val, y_val))

``import cnn`` loads NumPy-only modules: the PyTorch twin (:mod:`cnn.torch_model`), tracking and plotting
are imported explicitly by those who need them.
"""

from cnn.architecture import ArchConfig, build_spec
from cnn.errors import (
    CheckpointError,
    CNNError,
    ConfigError,
    DataError,
    TrackingError,
    TrainingDivergedError,
)
from cnn.model import CNN, Sequential
from cnn.training import History, TrainingInterrupted

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
