"""Reproduce the paper's evaluation: Table I and the noise experiment (Fig. 2).

* :mod:`tinydl.reproduce.protocol` -- the protocol: splits, stream order, the size procedure,
  departures from the paper, noise (:func:`reproduce`, :func:`run_dataset`, :class:`Settings`);
* :mod:`tinydl.reproduce.runs` -- the two learners run on one stream and timed;
* :mod:`tinydl.reproduce.noise` -- white Gaussian noise and the Fig. 2 experiment;
* :mod:`tinydl.reproduce.report` -- the tables and the noise plot.
"""
from .noise import add_noise
from .protocol import (
    APPLICATIONS,
    PAPER_TABLE_I,
    PROTOCOL,
    Settings,
    reproduce,
    run_dataset,
)
from .report import format_report, plot_noise

__all__ = ["Settings", "APPLICATIONS", "PAPER_TABLE_I", "PROTOCOL", "reproduce",
           "run_dataset", "add_noise", "format_report", "plot_noise"]
