"""Marks: the fixed sample counts where the learner retrains, rebuilds and checkpoints.

Determinism: the same seed and the same stream give the same model however the stream is cut
into ``partial_fit`` calls, because retraining and rebuilds happen at fixed sample counts
(multiples of ``n_batch``), never at call boundaries, and every draw (reservoir, rebuild order)
is a function of the seed and the sample count.  :class:`MarkedStream` (a part of
:class:`~tinydl.learner.TinyDLClassifier`) cuts the arriving rows at every ``n_batch`` mark
(an update: :mod:`tinydl.rebuild` or ``epochs_per_update`` epochs on the window) and every
``checkpoint_every`` mark (a checkpoint), whatever the sizes of the ``partial_fit`` calls.
"""
from __future__ import annotations

import contextlib

from .codes import SparseCodes
from .rebuild import new_classes_held, rebuild
from .standardize import N_STANDARDIZE

__all__ = ["MarkedStream"]


class MarkedStream:
    """The stream side of :class:`~tinydl.learner.TinyDLClassifier`: arrivals into the
    window, updates at the ``n_batch`` marks, checkpoints at the ``checkpoint_every`` marks,
    and :meth:`finish`."""

    @property
    def n_samples_consumed_(self) -> int:
        """Samples taken from the stream: coded ones plus those held for the
        standardization statistics (where a resumed stream continues)."""
        return int(self.n_samples_seen_ + self.standardizer_.n_pending)

    def _retrain(self, epochs=None):
        # views of the window and the rows that hold a sample, not an ordered copy (the
        # network visits them shuffled anyway)
        codes, labels, rows = self.window_.train_view()
        with self.train_timer or contextlib.nullcontext():
            self.network_.partial_fit(codes, labels, classes=self._class_index,
                                      epochs=int(epochs or self.epochs_per_update),
                                      rows=rows, average=self._average_beta(),
                                      scratch=self._lent_scratch())
        self.n_updates_ += 1
        if self.on_update is not None:
            self.on_update(self)

    def _lent_scratch(self):
        """The transform's idle workspace arrays, lent to the network while it retrains (no
        transform runs then): an average's float16 stash lies there (see
        :meth:`tinydl.nn.classifier.NetworkClassifier.partial_fit`'s ``scratch``), and the
        plan prices only what does not fit (:func:`tinydl.footprint.plan_buffers`)."""
        return self.transform_._idle_scratch() if self.average == "ema" else None

    def _average_beta(self):
        """The weight average's blend at this update (``average="ema"``, see
        :class:`~tinydl.learner.TinyDLClassifier`): None before the stream has filled the
        window (no average yet), 0 to start it, then :func:`~tinydl.learner.average_beta`."""
        if self.average != "ema":
            self.network_.stop_average()  # set "off" after an average started: W again
            return None
        if self.n_samples_seen_ <= self.window:
            return None
        from .learner import average_beta
        n = self.network_.n_averaged_
        return average_beta(n + 1) if n else 0.0

    def _update(self):
        """At an ``n_batch`` mark (or the end of the stream): rebuild when the window holds
        a class it did not hold at the last rebuild (``rebuild="new-class"``), else train
        ``epochs_per_update`` epochs on the window."""
        held = new_classes_held(self)
        if held is not None:
            rebuild(self, held)  # see tinydl.rebuild
        else:
            self._retrain()

    def _marks(self, n, cut=0):
        """Cut ``n`` arriving rows at the retraining and checkpoint marks (and at ``cut``):
        yields ``(pos, end, at_update, at_checkpoint)``."""
        every = self.checkpoint_every if self.checkpoint_dir is not None else None
        pos, seen = 0, self.n_samples_seen_
        while pos < n:
            to_mark = self.n_batch - seen % self.n_batch
            if every:
                to_mark = min(to_mark, every - seen % every)
            end = min(n, pos + to_mark)
            if pos < cut:
                end = min(end, cut)
            seen += end - pos
            yield pos, end, seen % self.n_batch == 0, bool(every) and seen % every == 0
            pos = end

    def _store(self, y, codes_of, raw=None, cut=0):
        """Push arrivals into the window (``codes_of(pos, end)``: their codes), update
        at each ``n_batch`` mark and checkpoint at each ``checkpoint_every`` mark (from
        ``cut`` on): both at fixed sample counts whatever the batch sizes."""
        for pos, end, at_update, at_checkpoint in self._marks(len(y), cut):
            self.window_.push(codes_of(pos, end), y[pos:end],
                              raw=None if raw is None else raw[pos:end])
            self.n_samples_seen_ += end - pos
            if at_update:
                self._update()
            # a checkpoint holds a transform that has seen exactly the samples before it
            if at_checkpoint and end >= cut:
                self.save(self.checkpoint_dir)

    def _consume_raw(self, X, y):
        """``rebuild="new-class"``: code arrivals with the current statistics and dictionary
        (none before the first rebuild), store them with their raw rows."""
        def codes_of(pos, end):
            if not self.n_rebuilds_:
                return None
            codes = self._transform_rows(self.standardizer_.transform(X[pos:end]))
            return codes.scaled(self._code_scale)
        self._store(y, codes_of, raw=X)

    def _consume(self, X, y):
        """Transform standardized rows and store their codes."""
        # the rows that fixed the standardization are transformed in one call (at least
        # n_standardize rows, or all of a short stream), as before the standardizer left the
        # transform: the transform's codes are then the same bits as they were
        coded = min(len(X), N_STANDARDIZE) if (self.standardize and
                                               self.n_samples_seen_ == 0) else 0
        codes = self._transform_rows(X[:coded]) if coded else None

        def codes_of(pos, end):
            part = codes.rows(pos, end) if pos < coded else self._transform_rows(X[pos:end])
            return part.scaled(self._code_scale)
        self._store(y, codes_of, cut=coded)

    def _transform_rows(self, X) -> SparseCodes:
        with self.transform_timer or contextlib.nullcontext():
            return self.transform_.partial_fit_transform(X, dense=False)

    def finish(self):
        """End of the stream: code any samples still held for the standardization
        statistics (a stream shorter than ``n_standardize``) and update the network on the
        samples that arrived since the last ``n_batch`` mark.  Returns ``self``."""
        if not hasattr(self, "transform_"):
            raise ValueError("nothing to finish: this TinyDLClassifier has seen no data")
        if self.finished_at_ == self.n_samples_consumed_:
            return self  # already finished at this point of the stream (a resumed run)
        released = self.standardizer_.flush()
        if released is not None:
            self._consume(*released)
        if self.n_samples_seen_ % self.n_batch:
            self._update()
        self.finished_at_ = self.n_samples_seen_
        return self
