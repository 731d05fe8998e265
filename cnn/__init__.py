"""cnn: a convolutional neural network library written from scratch in NumPy."""
