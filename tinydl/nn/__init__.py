"""A pure-NumPy deep-network trainer whose heavy operations run through :mod:`hal`.

Layers are explicit forward/backward pairs (:mod:`.layers`), parameters live in one flat
buffer (:mod:`.network`), SGD with momentum, Adam and Adafactor update it (:mod:`.optim`) on
the L2 or cross-entropy loss (:mod:`.losses`), and :class:`MLPClassifier` /
:class:`CNNClassifier` wrap it all with scikit-learn's conventions (:mod:`.classifier`,
:mod:`.cnn`).
"""
from .classifier import (
    CNNClassifier,
    DataConversionWarning,
    DivergenceError,
    MLPClassifier,
    NetworkClassifier,
    NotFittedError,
)
from .conv import Conv1D, Conv2D, MaxPool1D, MaxPool2D
from .layers import Dense, Dropout, ReLU, Sigmoid, Tanh
from .losses import CrossEntropyLoss, L2Loss
from .network import Network
from .optim import SGD, Adafactor, Adam

__all__ = ["MLPClassifier", "CNNClassifier", "NetworkClassifier", "DivergenceError",
           "NotFittedError", "DataConversionWarning", "Network", "Dense", "ReLU", "Tanh",
           "Sigmoid", "Dropout", "Conv1D", "Conv2D", "MaxPool1D", "MaxPool2D",
           "CrossEntropyLoss", "L2Loss", "SGD", "Adam", "Adafactor"]
