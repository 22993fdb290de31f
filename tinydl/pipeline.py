"""Compatibility: the TinyDL learner now lives in :mod:`tinydl.learner`."""
from .learner import TinyDLClassifier

__all__ = ["TinyDLClassifier"]
