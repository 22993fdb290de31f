"""The NumPy specification of the streaming transform's basis (TinyDL's Algorithm 2).

The transform keeps its dictionary ``D`` (atoms as rows, unit norm), an orthonormal basis
``Q`` of span(D) in the same order, ``L`` with ``D = L Q`` (lower triangular) and the Gram
matrix ``G = D D^T``.  Two operations touch them, and every backend offers both through
:meth:`BasisSpec.prepare_basis` (the native backend in C, ``hal/backends/native/basis.c``):

* the projection-error test of one row ``x``: ``p = Q[:n] x``, ``|x|^2`` and ``|p|^2``
  (``Wp^2 = 1 - |p|^2 / |x|^2``);
* the append of a joining row ``a`` as atom ``n``: one Gram-Schmidt step (reusing ``Q a``
  when the test just computed it), a second one (re-orthogonalization) only when the first
  removed more than half of the atom's squared norm - the criterion of Daniel, Gragg,
  Kaufman and Stewart (1976): below it the first step can lose orthogonality, above it one
  step is orthogonal to working precision - and the new rows of ``L`` and ``G`` (``G``'s row
  from ``L`` in O(l^2), without reading ``D``).
"""
from __future__ import annotations

import numpy as np

__all__ = ["BasisSpec", "BasisWorkspace"]


class BasisWorkspace:
    """The transform's basis arrays bound once, with the scratch their operations need.

    Parameters
    ----------
    backend : NumpyBackend
        Runs the row-independent product of the test (:meth:`rows_matmul`).
    D, Q : ndarray of shape (lb, m)
        Atoms and orthonormal basis, rows past the atoms in use zero; C-contiguous.
    L, G : ndarray of shape (lb, lb)
        ``D = L Q`` and ``G = D D^T``.

    Attributes
    ----------
    p : ndarray of shape (lb,)
        The projections ``Q[:n] x`` of the last tested row (a joining row's ``proj``).
    """

    def __init__(self, backend, D, Q, L, G):
        lb, m = D.shape
        dt = D.dtype
        for name, a, shape in (("D", D, (lb, m)), ("Q", Q, (lb, m)), ("L", L, (lb, lb)),
                               ("G", G, (lb, lb))):
            if a.dtype != dt or a.shape != shape or not a.flags.c_contiguous:
                raise ValueError(f"prepare_basis: {name} should be C-contiguous {dt} of shape "
                                 f"{shape}, got {a.dtype} {a.shape}")
        self.backend = backend
        self.D, self.Q, self.L, self.G = D, Q, L, G
        self.dtype, self.m, self.lb = dt, m, lb
        self.p = np.zeros(lb, dt)
        # fixed buffers: the same memory alignment whatever the batch split
        self._x1 = np.zeros((1, m), dt)
        self._p1 = np.zeros((1, lb), dt)
        self._avec = np.empty(m, dt)
        self._uvec = np.empty(m, dt)

    def wp_row(self, n: int, x: np.ndarray):
        """The projection-error test of one row ``x`` (m,) against ``Q[:n]``.

        Returns
        -------
        xx, pp : scalar
            ``|x|^2`` and ``|Q[:n] x|^2``; the projections are left in ``p[:n]``.
        """
        x1 = self._x1
        x1[0] = x
        xx = np.einsum("ij,ij->i", x1, x1)[0]
        if n == 0:
            return xx, self.dtype.type(0)
        # at least 2 rows of Q (zero past n): a one-column product would go through gemv
        nq = max(n, 2)
        P = self._p1[:, :nq]
        self.backend.rows_matmul(x1, self.Q[:nq].T, out=P)
        self.p[:n] = P[0, :n]
        return xx, np.einsum("ij,ij->i", P, P)[0]

    def append(self, n: int, a: np.ndarray, proj=None, x=None):
        """Append ``a / |a|`` as atom ``n`` (and its direction as ``Q[n]``, its rows of ``L``
        and ``G``).

        Parameters
        ----------
        n : int
            The atoms in use (the new one's row).
        a : ndarray of shape (m,)
        proj : ndarray of shape (n,), optional
            ``Q[:n] a`` from the row's test (saves a pass over Q).
        x : ndarray of shape (m,), optional
            The next row of the stream: its test against the new basis is returned too.

        Returns
        -------
        norm : scalar
            ``|a|`` (the joining row's code on its atom).
        reorth : bool
            Whether the second Gram-Schmidt step ran.
        xx, pp : scalar or None
            :meth:`wp_row` of ``x`` against ``Q[:n + 1]`` (None without ``x``).
        """
        if not 0 <= n < self.lb:
            raise ValueError(f"atom {n} does not fit the {self.lb} rows of the basis")
        v = self._avec
        v[:] = a
        norm = np.sqrt(np.dot(v, v))
        d = self.D[n]
        np.divide(v, norm, out=d)
        u = self._uvec
        u[:] = d
        Ln = self.L[n]
        reorth = False
        if n:
            Qn = self.Q[:n]
            h = Qn @ u if proj is None else proj / norm
            u -= h @ Qn
            if np.dot(u, u) < 0.5 * np.dot(d, d):
                h2 = Qn @ u
                u -= h2 @ Qn
                h = h + h2
                reorth = True
            Ln[:n] = h  # d = h Q[:n] + |u| q_n
            # D[:n] d = L[:n, :n] (Q[:n] d) = L[:n, :n] h: the Gram row without reading D
            g = self.L[:n, :n] @ Ln[:n]
            self.G[n, :n] = g
            self.G[:n, n] = g
        self.G[n, n] = np.dot(d, d)
        unorm = np.sqrt(np.dot(u, u))
        Ln[n] = unorm
        np.divide(u, unorm, out=self.Q[n])
        if x is None:
            return norm, reorth, None, None
        xx, pp = self.wp_row(n + 1, x)
        return norm, reorth, xx, pp


class BasisSpec:
    """Mixin of :class:`~hal.backends.numpy.NumpyBackend`: :meth:`prepare_basis`."""

    def prepare_basis(self, D, Q, L, G) -> BasisWorkspace:
        """Bind the streaming transform's basis arrays (D and Q (lb, m), L and G (lb, lb),
        C-contiguous, one float dtype, kept for the workspace's life).

        Returns
        -------
        BasisWorkspace
            ``wp_row(n, x)`` and ``append(n, a, proj, x)``.
        """
        return BasisWorkspace(self, D, Q, L, G)
