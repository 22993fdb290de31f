"""Compatibility: chunked reading now lives in :mod:`tinydl.data.stream`."""
from .data.stream import Stream, open_stream

__all__ = ["Stream", "open_stream"]
