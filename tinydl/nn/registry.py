"""The layer registry: every layer kind a saved network may name, and how to rebuild one.

Kept apart from :mod:`.layers` and :mod:`.conv` so that neither imports the other's module
back (conv layers build on :class:`~tinydl.nn.layers.Layer`).
"""
from __future__ import annotations

from .conv import Conv1D, Conv2D, MaxPool1D, MaxPool2D
from .layers import Dense, Dropout, Layer, ReLU, Sigmoid, Tanh

__all__ = ["LAYERS", "layer_from_config"]

#: kind (as saved in a model file) -> layer class
LAYERS = {cls.kind: cls for cls in (Dense, ReLU, Tanh, Sigmoid, Dropout, Conv2D, Conv1D,
                                    MaxPool2D, MaxPool1D)}


def layer_from_config(kind: str, config: dict) -> Layer:
    """Rebuild a layer from ``(kind, config())`` as stored by a model file.

    Parameters
    ----------
    kind : str
        A key of :data:`LAYERS`.
    config : dict
        The layer's constructor arguments (its ``config()``).

    Returns
    -------
    Layer

    Raises
    ------
    ValueError
        If ``kind`` names no registered layer.
    """
    if kind not in LAYERS:
        raise ValueError(f"unknown layer kind {kind!r}; known: {', '.join(sorted(LAYERS))}")
    return LAYERS[kind](**config)
