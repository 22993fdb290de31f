"""The convolutional classifier: 1-D or 2-D convolution and pooling blocks, then dense layers
(:class:`~tinydl.nn.classifier.NetworkClassifier` does the rest)."""
from __future__ import annotations

import numpy as np

from .classifier import _ACTIVATIONS, NetworkClassifier
from .conv import Conv1D, Conv2D, MaxPool1D, MaxPool2D

__all__ = ["CNNClassifier"]


class CNNClassifier(NetworkClassifier):
    """Convolutional classifier for 1-D signals or 2-D images given as flat rows.

    Parameters
    ----------
    input_shape : tuple of int, or None
        One sample's shape, channels first: ``(C, L)`` for signals, ``(C, H, W)`` for images;
        ``X`` rows hold ``prod(input_shape)`` values in that (C-order) layout.  ``None``: each
        row is a one-channel signal, ``(1, n_features)``.
    conv_layers : tuple of (filters, kernel_size, pool_size)
        Each block is convolution ("same" padding, stride 1) -> activation -> max pooling
        (skipped for pool_size 1).
    hidden_layer_sizes : tuple of int
        Dense layers after the convolutions.
    Other parameters as :class:`MLPClassifier`.
    """

    _param_names = ("input_shape", "conv_layers", "hidden_layer_sizes", "activation", "dropout",
                    "loss", "optimizer", "learning_rate", "momentum", "batch_size", "epochs",
                    "seed", "dtype", "backend", "sparse_product")

    def __init__(self, input_shape=(1, 8, 8), conv_layers=((8, 3, 2),), hidden_layer_sizes=(32,),
                 activation="relu", dropout=0.0, loss="cross_entropy", optimizer="sgd",
                 learning_rate=0.01, momentum=0.9, batch_size=32, epochs=10, seed=0,
                 dtype="float32", backend=None, sparse_product="dense"):
        self.input_shape = input_shape
        self.conv_layers = conv_layers
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.dropout = dropout
        self.loss = loss
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.batch_size = batch_size
        self.epochs = epochs
        self.seed = seed
        self.dtype = dtype
        self.backend = backend
        self.sparse_product = sparse_product

    def _input_shape(self, n_features):
        if self.input_shape is None:
            return (1, int(n_features))
        shape = tuple(int(s) for s in self.input_shape)
        if len(shape) not in (2, 3) or int(np.prod(shape)) != n_features:
            raise ValueError(f"input_shape={shape} must be (C, L) or (C, H, W) with "
                             f"{n_features} values (the number of features)")
        return shape

    def _make_layers(self, n_features, n_classes):
        two_d = len(self._input_shape(n_features)) == 3
        conv, pool = (Conv2D, MaxPool2D) if two_d else (Conv1D, MaxPool1D)
        layers = []
        for filters, kernel, pool_size in self.conv_layers:
            layers += [conv(filters, kernel, 1, int(kernel) // 2), _ACTIVATIONS[self.activation]()]
            if int(pool_size) > 1:
                layers.append(pool(pool_size))
        return layers + self._dense_layers(n_classes)
