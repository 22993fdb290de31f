"""Optimizers over the flat parameter buffer: one vector operation per update term.

All follow PyTorch's update rules exactly (so identical initial weights and batches give the
same weights up to rounding):

* SGD with momentum ``mu`` (the TinyDL paper's): ``v = mu v + g``; ``p -= lr v``.
* Adam: ``m = b1 m + (1-b1) g``, ``v = b2 v + (1-b2) g^2``,
  ``p -= (lr / (1-b1^t)) m / (sqrt(v) / sqrt(1-b2^t) + eps)``.
* Adafactor (Shazeer and Stern, 2018) as PyTorch computes it: no first moment, Adam's second
  moment factored per weight matrix into its row and column means (``r + c`` numbers for an
  ``r x c`` matrix instead of ``r c``), the update clipped to an RMS of 1, a step relative to
  the parameters' RMS; vectors (biases) keep a full second moment.  For memory-bound
  learners (``tinydl plan --memory``): its state is a few hundred bytes where Adam's is
  twice the parameters.

``step(p, g)`` uses ``g`` as scratch (it is recomputed by the next backward pass), so SGD holds
one extra buffer, Adam two (its moments; the update's temporaries live in ``g``) and Adafactor
a vector per matrix side; :meth:`Optimizer.state_bytes` says so before training.

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

__all__ = ["Optimizer", "SGD", "Adam", "Adafactor", "OPTIMIZERS"]


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

    def prepare(self, n_params: int, dtype, layout=None) -> Dict[str, np.ndarray]:
        """Allocate the state once (zeros); calling it again keeps existing state.

        ``layout`` (the network's :attr:`~tinydl.nn.network.Network.layout`: ``(start,
        shape)`` of each parameter tensor in the flat buffer) is read by optimizers whose
        state follows the tensors' shapes (:class:`Adafactor`); the others ignore it."""
        for name in self.buffer_names:
            if name not in self.state or self.state[name].shape != (n_params,):
                self.state[name] = np.zeros(n_params, dtype)
        return self.state

    @classmethod
    def state_bytes(cls, n_params: int, itemsize: int, layout=None) -> int:
        """Bytes of state for ``n_params`` parameters of ``itemsize`` bytes (laid out as
        ``layout``, see :meth:`prepare`)."""
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


class Adafactor(Optimizer):
    """Adafactor (Shazeer and Stern, 2018) as PyTorch's ``torch.optim.Adafactor`` computes it:
    Adam's second moment factored per weight matrix, no first moment, a relative step.

    For a matrix gradient ``G`` (r, c) at step ``t`` it keeps ``R`` (r,) and ``C`` (c,),
    running means of ``G**2`` over each row and each column (``R = lerp(R, mean_j G**2,
    t**beta2_decay)``: the first step takes the means as they are, later ones weigh the past
    more); ``V = R C^T / mean(R)`` (the rank-1 fit that keeps the row and column sums) stands
    for Adam's ``v``.  A vector (a bias) keeps a full ``v``.  The update ``U = G /
    max(sqrt(V), eps1)``, scaled down to an RMS of ``d`` when larger, is taken with the step
    ``max(eps2, RMS(param)) * min(learning_rate, 1 / sqrt(t))``.  State: ``r + c`` numbers
    per matrix, one per bias entry (at l=80, 80-32-13: 202 numbers where Adam keeps 6,042).

    Why: in a learner whose memory budget is a few hundred KiB (``tinydl plan --memory``),
    Adam's two moments cost twice the network's parameters; the bytes freed buy a wider
    network (:data:`tinydl._plan_options.LEAN_NETWORK`, ``benchmarks/small_memory.py``).
    Agrees with PyTorch's (``tests/core/test_nn_classifier.py``) up to rounding.

    Parameters
    ----------
    learning_rate : float, default=1e-2
        The relative step's cap (PyTorch's ``lr``).
    beta2_decay : float, default=-0.8
    eps1 : float, optional
        Floor of ``sqrt(V)``; default: the dtype's machine epsilon.
    eps2 : float, default=1e-3
        Floor of the parameters' RMS in the step.
    d : float, default=1.0
        The RMS an update is scaled down to when larger.
    """

    name = "adafactor"
    #: row means of the matrices, their column means, the vectors' full second moment (each
    #: one flat buffer, views per tensor; sized by the layout, not the parameter count)
    buffer_names = ("vr", "vc", "v1")

    def __init__(self, learning_rate: float = 1e-2, beta2_decay: float = -0.8,
                 eps1: float = None, eps2: float = 1e-3, d: float = 1.0):
        super().__init__(learning_rate)
        self.beta2_decay, self.eps2, self.d = float(beta2_decay), float(eps2), float(d)
        self.eps1 = None if eps1 is None else float(eps1)
        self._layout, self._bound = None, None

    @staticmethod
    def _cols(shape) -> int:
        """Columns of a tensor of ``shape`` seen as a matrix (its first axis the rows): the
        length of its column factor ``C`` and of the step's column scratch."""
        return int(np.prod(shape[1:]))

    @classmethod
    def _sizes(cls, n_params, layout):
        """(rows, cols, vector) numbers of state for ``layout`` (None: one vector)."""
        if layout is None:
            return 0, 0, int(n_params)
        r = c = v = 0
        for _, shape in layout:
            if len(shape) >= 2:
                r += int(shape[0])
                c += cls._cols(shape)
            else:
                v += int(np.prod(shape))
        return r, c, v

    @classmethod
    def state_bytes(cls, n_params: int, itemsize: int, layout=None) -> int:
        r, c, v = cls._sizes(n_params, layout)
        # + the scratch (:meth:`_scratch_size`) and the step's transient (NumPy's small
        # buffers and reductions' results)
        layout = layout if layout is not None else ((0, (int(n_params),)),)
        cols = max([cls._cols(s) for _, s in layout if len(s) >= 2] + [0])
        return ((r + c + v + cls._scratch_size(layout)) * itemsize + _STEP_TRANSIENT
                + 2 * itemsize * cols)

    @classmethod
    def _scratch_size(cls, layout) -> int:
        """Numbers of the step's scratch: a matrix's row and column factors and a row, or a
        vector's squared gradient, whichever tensor needs most."""
        return max([int(s[0]) + 2 * cls._cols(s) if len(s) >= 2
                    else int(np.prod(s)) for _, s in layout] + [1])

    def prepare(self, n_params: int, dtype, layout=None):
        if layout is None:
            layout = ((0, (int(n_params),)),)
        self._layout = tuple((int(st), tuple(int(d) for d in sh)) for st, sh in layout)
        r, c, v = self._sizes(n_params, self._layout)
        for name, size in (("vr", r), ("vc", c), ("v1", v)):
            if name not in self.state or self.state[name].shape != (size,):
                self.state[name] = np.zeros(size, dtype)
        self._eps = float(np.finfo(dtype).eps) if self.eps1 is None else self.eps1
        self._bound = None
        return self.state

    def __getstate__(self):
        # views of the state and of the network's buffers: a copy rebuilds its own (a deep
        # copy of a view is not a view of the copied base)
        state = dict(self.__dict__)
        state["_bound"] = None
        return state

    def _bind(self, p, g):
        """Each tensor's views of ``p``, ``g``, the state and a scratch, made once per set of
        buffers (views are Python objects: made per step they were a visible share of it)."""
        vr, vc, v1 = (self.state[k] for k in self.buffer_names)
        scr = np.empty(self._scratch_size(self._layout), vr.dtype)
        views, ro, co, vo = [], 0, 0, 0
        for start, shape in self._layout:
            n = int(np.prod(shape))
            P, G = p[start:start + n], g[start:start + n]
            if len(shape) >= 2:
                rows, cols = shape[0], self._cols(shape)
                rs, cs = scr[:rows], scr[rows:rows + cols]
                views.append((P, G.reshape(rows, cols), G, vr[ro:ro + rows], vc[co:co + cols],
                              rs, rs[:, None], cs, scr[rows + cols:rows + 2 * cols], rows,
                              cols, n))
                ro, co = ro + rows, co + cols
            else:
                views.append((P, G, G, v1[vo:vo + n], None, scr[:n], None, None, None, n, 0,
                              n))
                vo += n
        self._bound = (p, g, vr, vc, v1, views)
        return views

    def step(self, p, g):
        self.t += 1
        w = float(self.t) ** self.beta2_decay      # 1 - beta2 at this step
        rho = min(self.learning_rate, 1.0 / math.sqrt(self.t))
        eps, eps_sq, d = self._eps, self._eps * self._eps, self.d
        b = self._bound
        views = b[5] if (b is not None and b[0] is p and b[1] is g and b[2] is self.state["vr"]
                         and b[3] is self.state["vc"] and b[4] is self.state["v1"]) \
            else self._bind(p, g)
        # the row and column scalings broadcast a vector over a matrix: NumPy's iterator
        # buffers such an operand (up to 8,192 elements, a matrix-sized transient at these
        # sizes); a small buffer keeps the step's transient to a few hundred numbers
        old = np.setbufsize(_BUFSIZE)
        try:
            self._step(views, w, rho, eps, eps_sq, d)
        finally:
            np.setbufsize(old)
        p -= g

    def _step(self, views, w, rho, eps, eps_sq, d):
        for P, G, flat, R, C, rs, rs_col, cs, tmp, rows, cols, n in views:
            alpha = max(self.eps2, math.sqrt(float(np.dot(P, P)) / n)) * rho
            if cols:
                # the row and column means of G**2 (einsum: no (r, c) temporary), into R, C
                np.einsum("ij,ij->i", G, G, out=rs)
                np.einsum("ij,ij->j", G, G, out=cs)
                rs *= w / cols
                cs *= w / rows
                R *= 1.0 - w
                R += rs
                C *= 1.0 - w
                C += cs
                # U = G / sqrt(max(R_i C_j / mean(R), eps1^2)): the reciprocal roots of
                # R_i / mean(R) and of C_j scale G's rows and columns in place.  A zero R_i
                # (C_j) means that row (column) of G is zero (R >= w mean G**2): its factor
                # is floored to a finite one, the product stays zero
                # (np.add.reduce, min: ndarray.mean's and min(where=)'s own overhead is
                # several times the arithmetic at these sizes)
                mR = max(float(np.add.reduce(R)) / rows, eps)
                np.multiply(R, 1.0 / mR, out=rs)
                # (zero rows and columns of G have a zero update whatever the floor)
                cpos = _least_positive(C)
                clamp = ()
                if _least_positive(rs) * cpos < eps_sq:
                    # rows with R_i C_j / mean(R) under eps1**2 (a row of G far smaller than
                    # the rest, or one whose R has decayed since: beta2 -> 1): found before
                    # rs is overwritten (O(r) temporaries)
                    clamp = np.flatnonzero((rs > 0) & (rs * cpos < eps_sq))
                np.maximum(rs, _TINY, out=rs)
                np.power(rs, -0.5, out=rs)
                np.maximum(C, _TINY, out=cs)
                np.power(cs, -0.5, out=cs)
                G *= rs_col
                G *= cs
                for i in clamp:
                    # back to G's row (undo its factors), then PyTorch's floored root
                    row = G[i]
                    row /= cs
                    row /= rs[i]
                    np.multiply(C, float(R[i]) / mR, out=tmp)
                    np.maximum(tmp, eps_sq, out=tmp)
                    np.sqrt(tmp, out=tmp)
                    row /= tmp
            else:
                np.multiply(G, G, out=rs)
                rs *= w
                R *= 1.0 - w
                R += rs
                np.maximum(R, eps_sq, out=rs)
                np.sqrt(rs, out=rs)
                G /= rs
            denom = max(1.0, math.sqrt(float(np.dot(flat, flat)) / n) / d)
            G *= alpha / denom


def _least_positive(a) -> float:
    """The least positive entry of a non-negative array (inf if none)."""
    v = float(a.min())
    return v if v > 0 else float(np.min(a, where=a > 0, initial=np.inf))


#: NumPy's ufunc buffer (elements) during an Adafactor step (see Adafactor.step)
_BUFSIZE = 256
#: an Adafactor step's transient bytes with that buffer, plus two numbers per column of its
#: widest matrix: measured with tracemalloc at 80-32/64/128/512-13 (6.3 / 6.3 / 6.8 / 10.1
#: KB: the buffers, einsum's and the reductions' small results, the eps1 floor's masks)
_STEP_TRANSIENT = 7 * 1024

#: the floor of Adafactor's row and column factors before their reciprocal root: a zero factor
#: belongs to a zero row or column of the gradient, whose update must stay zero (not 0 * inf)
_TINY = 1e-30


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adafactor": Adafactor}
