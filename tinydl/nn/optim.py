"""Optimizers over the flat parameter buffer: one vector operation per update term.

Both follow PyTorch's update rules exactly (so identical initial weights and batches give the
same weights up to rounding):

* SGD with momentum ``mu`` (the TinyDL paper's): ``v = mu v + g``; ``p -= lr v``.
* Adam: ``m = b1 m + (1-b1) g``, ``v = b2 v + (1-b2) g^2``,
  ``p -= (lr / (1-b1^t)) m / (sqrt(v) / sqrt(1-b2^t) + eps)``.

``step(p, g)`` uses ``g`` as scratch (it is recomputed by the next backward pass), so SGD holds
one extra buffer and Adam two (its moments; the update's temporaries live in ``g``);
:meth:`Optimizer.state_bytes` says so before training.

SGD with momentum also has a fused step, :meth:`SGD.step_deferred`: the weight-gradient GEMMs
of the large weights, left pending by ``Network.backward(dout, defer_weights=True)``, run after
the trainer's divergence check and accumulate straight into the velocity (``u_W = mu u_W +
x^T (lr dy)``, one GEMM with ``beta = mu``), then ``p -= u``.  For those weights the gradient
buffer is never written nor read again: the GEMM's write of ``g`` and the two vector passes
``u *= mu; u += g`` (five array streams) are gone, the GEMM scaling ``u`` by ``mu`` instead
(~2.5 ms a step less on the benchmark's 6.3M-weight MLP, measured).
"""
from __future__ import annotations

import math
from typing import Dict

import numpy as np

__all__ = ["Optimizer", "SGD", "Adam", "OPTIMIZERS"]


class Optimizer:
    """An update rule over the network's flat parameter buffer ``p`` and gradient ``g``
    (both (n_params,)); its state buffers are allocated once by :meth:`prepare`.

    Parameters
    ----------
    learning_rate : float
    """

    name = "abstract"
    n_buffers = 0

    def __init__(self, learning_rate: float):
        self.learning_rate = float(learning_rate)
        self.state: Dict[str, np.ndarray] = {}
        self.t = 0

    def prepare(self, n_params: int, dtype) -> Dict[str, np.ndarray]:
        """Allocate the state once (zeros); calling it again keeps existing state."""
        for name in self.buffer_names:
            if name not in self.state or self.state[name].shape != (n_params,):
                self.state[name] = np.zeros(n_params, dtype)
        return self.state

    @classmethod
    def state_bytes(cls, n_params: int, itemsize: int) -> int:
        """Bytes of state for ``n_params`` parameters of ``itemsize`` bytes."""
        return len(cls.buffer_names) * n_params * itemsize

    buffer_names: tuple = ()
    #: the factor the gradients given to :meth:`step` must carry
    grad_scale = 1.0

    def step(self, p, g):
        """Update ``p`` (n_params,) in place from the gradient ``g`` (n_params,)."""
        raise NotImplementedError


class SGD(Optimizer):
    """SGD with momentum.  It keeps ``u = lr v`` and expects gradients already multiplied by
    ``lr`` (:attr:`grad_scale`; the trainer scales dL/d(outputs), a (batch, classes) array,
    instead of every parameter): the update ``u = mu u + lr g; p -= u`` is then three passes
    over the parameters instead of five, and equals PyTorch's ``v = mu v + g; p -= lr v``
    up to rounding (while ``learning_rate`` stays constant)."""

    name = "sgd"
    buffer_names = ("velocity",)

    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.9):
        super().__init__(learning_rate)
        self.momentum = float(momentum)

    @property
    def grad_scale(self) -> float:
        return self.learning_rate

    def step(self, p, g):
        """``g`` must be ``learning_rate`` times the gradient (see :attr:`grad_scale`)."""
        u = self.state["velocity"]
        if self.momentum:
            u *= self.momentum
            u += g
            p -= u
        else:
            p -= g
        self.t += 1

    def step_deferred(self, p, g, net):
        """:meth:`step` after ``net.backward(dout, defer_weights=True)``: the same update (up
        to the GEMM's rounding), with the deferred weight gradients accumulated straight
        into the velocity (``g`` holds the others, already times ``learning_rate``).

        Parameters
        ----------
        p, g : ndarray of shape (n_params,)
            ``net.params`` and ``net.grads``.
        net : Network
            Holds the pending weight-gradient GEMMs (:meth:`Network.flush_weight_grads`).
        """
        mu = self.momentum
        if mu:
            u = self.state["velocity"]
            for s, e in net.eager_ranges():
                us = u[s:e]
                us *= mu
                us += g[s:e]
            net.flush_weight_grads(u, beta=mu)
            p -= u
        else:
            net.flush_weight_grads(g, beta=0.0)
            p -= g
        self.t += 1


class Adam(Optimizer):
    """Adam (Kingma and Ba, 2015) with bias correction.

    Parameters
    ----------
    learning_rate : float, default=0.001
    beta1, beta2 : float, default=0.9, 0.999
    eps : float, default=1e-8
    """

    name = "adam"
    #: the two moments: the step's scratch is the gradient buffer itself (a third
    #: parameter-sized buffer would cost as much as the parameters, in a small budget)
    buffer_names = ("m", "v")

    def __init__(self, learning_rate: float = 0.001, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8):
        super().__init__(learning_rate)
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)

    def step(self, p, g):
        m, v = self.state["m"], self.state["v"]
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        # m = b1 m + (1 - b1) g and v = b2 v + (1 - b2) g^2 with g as the only scratch:
        # g' = (1 - b1) g goes into m, then (1 - b2) g^2 = g'^2 (1 - b2) / (1 - b1)^2 into v
        # (products only: no difference of nearly equal terms, which would lose digits)
        m *= b1
        g *= 1 - b1
        m += g
        np.multiply(g, g, out=g)
        g *= (1 - b2) / ((1 - b1) * (1 - b1))
        v *= b2
        v += g
        # the step: g = m / (sqrt(v) / sqrt(1 - b2^t) + eps) * lr / (1 - b1^t)
        np.sqrt(v, out=g)
        g *= 1.0 / math.sqrt(1 - b2 ** self.t)  # a Python float: no float64 upcast
        g += self.eps
        np.divide(m, g, out=g)
        g *= self.learning_rate / (1 - b1 ** self.t)
        p -= g


OPTIMIZERS = {"sgd": SGD, "adam": Adam}
