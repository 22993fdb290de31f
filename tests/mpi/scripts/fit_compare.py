"""Fit the same stream with MPITinyDLClassifier (collective) and save what the test compares.

Usage: mpiexec -n N python fit_compare.py OUT.npz   (or plain python for the reference run)
"""
import sys

from common import PARAMS, batches, np, stream, window_codes

from tinydl.distributed import MPITinyDLClassifier, under_mpi
from tinydl.pipeline import TinyDLClassifier
from tinydl.transform import StreamingDictionary

out = sys.argv[1]
X, y = stream()
Xt, yt = stream(n=200, seed=1)
mpi = under_mpi()
learner = (MPITinyDLClassifier if mpi else TinyDLClassifier)(**PARAMS)
for s, e in batches(len(X)):
    learner.partial_fit(X[s:e], y[s:e], classes=np.arange(4))
learner.finish() if hasattr(learner, "finish") else None

# the bare transform, sharded through the MPI backend, on another batch split
if mpi:
    from hal.backends.mpi import MPIBackend
    be = MPIBackend(block=64, min_rows=64)
    sd = StreamingDictionary(l=30, k=6, alpha=0.25, backend=be)
else:
    sd = StreamingDictionary(l=30, k=6, alpha=0.25)
codes = np.concatenate([sd.partial_fit_transform(X[s:e]) for s, e in
                        batches(len(X), (512, 77, 700))])

res = dict(dictionary=np.asarray(learner.transform_.dictionary_),
           test_codes=learner.transform(Xt), pred=learner.predict(Xt),
           params=learner.network_.network_.params, sd_dict=np.asarray(sd.dictionary_),
           sd_codes=codes, n_updates=learner.n_updates_, **window_codes(learner))
rank = learner.rank if mpi else 0
if mpi:
    # every rank holds the same model: each writes its own file, the test compares them
    np.savez(f"{out}.rank{rank}.npz", **res)
else:
    np.savez(out, **res)
if rank == 0:
    print(f"ok: {len(X)} samples, {learner.transform_.n_atoms_} atoms, "
          f"{learner.n_updates_} updates, accuracy {learner.score(Xt, yt):.3f}")
