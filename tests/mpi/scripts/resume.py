"""A checkpointed run that can be killed and resumed (tests/mpi/test_mpi.py, must-show 3).

Usage: mpiexec -n N python resume.py CKPT_DIR OUT.npz [--resume]
With TINYDL_TEST_KILL_AT=S and TINYDL_TEST_KILL_RANK=R, rank R kills itself (SIGKILL) once
S samples have been consumed: a rank lost mid-run.  TINYDL_TEST_SIGNAL=STOP stops it instead
(SIGSTOP: alive but silent, as a board that hangs or drops off the network).
"""
import os
import signal
import sys

from common import PARAMS, batches, np, stream, window_codes

from tinydl.distributed import MPITinyDLClassifier, under_mpi
from tinydl.pipeline import TinyDLClassifier

ckpt, out = sys.argv[1], sys.argv[2]
resume = "--resume" in sys.argv
Learner = MPITinyDLClassifier if under_mpi() else TinyDLClassifier
kill_at = int(os.environ.get("TINYDL_TEST_KILL_AT", "-1"))
kill_rank = int(os.environ.get("TINYDL_TEST_KILL_RANK", "1"))
X, y = stream()
Xt, yt = stream(n=200, seed=1)


def consumed(learner):
    return int(getattr(learner, "n_samples_consumed_", learner.n_samples_seen_))


if resume:
    learner = Learner.load(ckpt)
    start = consumed(learner)
else:
    learner = Learner(**PARAMS)
    start = 0
rank = learner.rank if under_mpi() else 0
if rank == 0:
    print(f"starting at sample {start}", flush=True)
for s, e in batches(len(X)):
    if e <= start:
        continue  # consumed before the checkpoint
    s = max(s, start)
    learner.partial_fit(X[s:e], y[s:e], classes=np.arange(4))
    learner.save(ckpt)
    if kill_at >= 0 and consumed(learner) >= kill_at and rank == kill_rank:
        print(f"rank {rank}: signalling myself (pid {os.getpid()}) at sample "
              f"{consumed(learner)}", flush=True)
        os.kill(os.getpid(), getattr(signal, "SIG" + os.environ.get("TINYDL_TEST_SIGNAL",
                                                                     "KILL")))
learner.finish()
if rank == 0:
    np.savez(out, dictionary=np.asarray(learner.transform_.dictionary_),
             test_codes=learner.transform(Xt), pred=learner.predict(Xt),
             params=learner.network_.network_.params, **window_codes(learner))
    print(f"done: {consumed(learner)} samples", flush=True)
