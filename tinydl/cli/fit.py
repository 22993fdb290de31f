"""``tinydl fit``: stream a data file through TinyDL (Algorithm 2, code window, network
updates), checkpointing as it goes; ``--resume`` continues a killed run exactly.

The file is read ``--chunk`` rows at a time (memory-mapped ``.npy`` and uncompressed
``.npz``; CSV a block of lines at a time), so memory does not grow with the stream.  The
model directory holds the checkpoints (``ckpt-<samples>/`` and ``LATEST``) and the plan
(``plan.json``); the last checkpoint *is* the model (``tinydl evaluate`` / ``predict``).

``--shuffle SEED`` streams a finite file in a seeded permuted order (for files that are not
live streams: a file in recorded order, its labels in long blocks, teaches a streaming learner
a few classes at a time); each chunk reads its rows by the permuted index, so memory stays one
chunk.  The seed is kept in ``MODEL_DIR/stream.json`` and ``--resume`` continues the same
permutation.  Streamed in file order, a file whose labels arrive in blocks gets a one-line
warning on stderr: the rule is a mean run length of equal labels more than
:data:`~tinydl.data.stream.BLOCKED_RUN_FACTOR` (8) times that of the same labels shuffled,
``1 / (1 - sum_c p_c**2)`` (Daily and Sports sorted by activity: 96 vs 1.06; UJIIndoorLoc in
file order: 16.3 vs 1.09; a shuffled file: about 1x).

With a plan (``--plan``, or the one made from the budget arguments), the window policy
follows the stream as it will be streamed (after ``--shuffle``): the paper's sliding window
unless its labels arrive in blocks by the rule above, then the class-balanced reservoir
(:data:`tinydl.plan.WINDOW_POLICY`).  Without ``--plan``, whether to standardize is decided
by :func:`tinydl.customize.scaling_rule` on a sample of the file.

Under ``mpiexec -n N`` (or with ``--mpi``) every rank reads the same chunks and the learner
shards the work (:mod:`tinydl.distributed`); only rank 0 prints and writes.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import zipfile

import numpy as np

from ._common import (
    ALPHA_ROWS,
    BUDGET_ARGS,
    Progress,
    add_budget_arguments,
    make_plan,
    positive_int,
    tuning_rows,
    tuning_sample,
    unit_float,
)

HELP = "train TinyDL on a data file as a stream, with checkpoints (--resume continues)"

_OVERRIDES = ("l", "k", "alpha", "window", "n_batch", "epochs_per_update", "batch_size",
              "average")


def add_arguments(p):
    p.add_argument("data", metavar="DATA", help="training data: .npz (X_train, y_train or X, "
                   "y), .npy (with --labels) or .csv (label in the last column)")
    p.add_argument("-o", "--output", required=True, metavar="MODEL_DIR",
                   help="directory for the checkpoints and the model")
    p.add_argument("--labels", metavar="PATH", help="labels .npy for a .npy of features")
    p.add_argument("--label-column", type=int, metavar="N", help="CSV label column "
                   "(default: last)")
    p.add_argument("--plan", metavar="PLAN.json", help="a plan from `tinydl plan -o`")
    add_budget_arguments(p)
    o = p.add_argument_group("overrides (take precedence over the plan)")
    o.add_argument("--l", type=positive_int, help="dictionary atoms")
    o.add_argument("--k", type=positive_int, help="non-zeros per code")
    o.add_argument("--alpha", type=unit_float, help="projection-error threshold")
    o.add_argument("--hidden", metavar="H1,H2", help="hidden layer sizes, e.g. 64,32")
    o.add_argument("--window", type=positive_int, help="codes kept for retraining")
    o.add_argument("--n-batch", dest="n_batch", type=positive_int, help="retrain every N samples")
    o.add_argument("--epochs", dest="epochs_per_update", type=positive_int,
                   help="epochs per update")
    o.add_argument("--batch-size", dest="batch_size", type=positive_int,
                   help="the network's minibatch")
    o.add_argument("--average", choices=("off", "ema"),
                   help="predict with a moving average of the weights (ema) or the last "
                   "update's (off); a plan turns it on for a stream of many windows where it fits")
    o.add_argument("--optimizer", choices=("adam", "sgd", "adafactor"),
                   help="the network's optimizer, at its default learning rate (adam 3e-3; "
                   "sgd: the paper's, 0.01 with momentum 0.9; adafactor 1e-2, a relative "
                   "step: Adam's second moment factored per weight matrix, what small-memory "
                   "plans take)")
    o.add_argument("--learning-rate", type=float, metavar="LR",
                   help="the network's learning rate (default: the optimizer's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", metavar="NAME", help="HAL backend (default: automatic)")
    p.add_argument("--chunk", type=int, metavar="ROWS", help="rows read at a time "
                   "(default: the plan's)")
    p.add_argument("--checkpoint-every", type=int, metavar="N",
                   help="checkpoint every N samples (default: 16 x n_batch)")
    p.add_argument("--resume", action="store_true",
                   help="continue from MODEL_DIR's last checkpoint (where there is none "
                        "yet, a new run starts and says so: the same command restarts a "
                        "killed job)")
    p.add_argument("--limit", type=int, metavar="N", help="stream only the first N samples")
    p.add_argument("--shuffle", type=int, metavar="SEED",
                   help="stream the file in a seeded permuted order (for a file that is not "
                   "a live stream, e.g. one in recorded order); --resume continues the same "
                   "permutation")
    p.add_argument("--mpi", action="store_true",
                   help="shard the work over MPI ranks (automatic under mpiexec -n N>1)")
    p.add_argument("--trace-memory", action="store_true",
                   help="measure the peak memory (tracemalloc) and report it")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _learner_class(args):
    from ..distributed import MPITinyDLClassifier, under_mpi
    from ..learner import TinyDLClassifier
    # under_mpi() reads the environment only; mpi4py is imported by the MPI learner itself
    return MPITinyDLClassifier if args.mpi or under_mpi() else TinyDLClassifier


def _plan_backend(out):
    """For ``--resume`` without ``--backend``: the backend the run's plan sized (its OMP
    workspace, tiles, packed Gram matrix: what the plan priced), when the checkpoint ran on
    that backend; else None (the checkpoint's own backend, by name)."""
    path = os.path.join(out, "plan.json")
    if not os.path.exists(path):
        return None
    from ..checkpoint import latest
    from ..customize import load_plan
    try:
        with np.load(os.path.join(out, latest(out), "learner.npz"),
                     allow_pickle=False) as z:
            saved = str(z["backend"]) if "backend" in z.files else ""
        plan = load_plan(path)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # a damaged checkpoint: Learner.load names what is wrong
    be = plan.backend_object()
    return None if isinstance(be, str) or saved != str(plan.backend) else be


def _hidden(text):
    from . import CommandError
    try:
        sizes = tuple(int(t) for t in str(text).split(",") if t.strip())
    except ValueError:
        raise CommandError(f"--hidden must be comma-separated integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise CommandError(f"--hidden must list positive layer sizes, got {text!r}")
    return sizes


_STREAM_FILE = "stream.json"


def _shuffle_seed(args, out, resuming):
    """The permutation seed: ``--shuffle``, or on ``--resume`` the one the run started with
    (``MODEL_DIR/stream.json``); a different one is refused."""
    from . import CommandError
    saved = None
    path = os.path.join(out, _STREAM_FILE)
    if resuming and os.path.exists(path):
        try:
            with open(path) as fh:
                saved = json.load(fh).get("shuffle")
        except (OSError, ValueError, AttributeError) as exc:
            raise CommandError(f"{path} is unreadable ({exc}); it records the stream's "
                               "order") from None
        if args.shuffle is not None and args.shuffle != saved:
            was = "file order" if saved is None else f"--shuffle {saved}"
            raise CommandError(f"{out} was streamed in {was}; --resume continues that order "
                               f"(drop --shuffle or pass the same seed)")
        return saved
    return args.shuffle


def _warn_blocked(st, start, stop, n_batch):
    from ..data import label_runs
    r = label_runs(st.y[start:stop], n_batch)
    if r["blocked"]:
        print(f"tinydl fit: warning: labels arrive in blocks: mean run length "
              f"{r['mean_run']:,.1f} samples (shuffled: {r['shuffled_run']:.2f}) over "
              f"{r['n_classes']} classes, {r['classes_per_batch']:.1f} classes per "
              f"{n_batch}-sample update; a stream in recorded order teaches a few classes at "
              "a time: consider --shuffle SEED if this file is not a live stream",
              file=sys.stderr, flush=True)


def _presize_interned(n=110_000):
    """Grow the interpreter's interned-string table before the measure starts.

    The table (a str-keyed dict) doubles when the identifiers interned so far fill 2/3 of it:
    at 2^16 slots the new table is 961,216 bytes, allocated in one piece on whatever line
    interns the string that crosses the threshold (measured in ``tinydl fit`` at m=5625: a
    BLAS call's ``__array_interface__``).  That is interpreter state, not the learner's, and
    which run crosses it is chance; interning ``n`` throw-away strings grows it now (a dict
    does not shrink when they are freed), as the imports above load the code first."""
    import sys
    pad = [sys.intern(f"_tinydl_presize_{i}") for i in range(n)]
    del pad


def run(args):
    from ..customize import load_plan
    from ..data import open_stream
    from . import CommandError, emit_json

    if args.trace_memory:
        # import (and build the backend) first: the measure is the run's data, not the
        # code objects of modules imported along the way (hal.execution: imported lazily by
        # the execution phase's first encode plan, the numpy backend's exec_plan, when the
        # dictionary fills: ~8 KB of code objects, at 256 KiB more than the budget's slack)
        import encodings.cp437  # noqa: F401 - zipfile's, at the first checkpoint
        import hashlib  # noqa: F401
        import inspect  # noqa: F401
        import secrets  # noqa: F401
        import tracemalloc
        import zipfile  # noqa: F401

        import numpy.ma  # noqa: F401 - imported lazily on the way otherwise
        import numpy.random  # noqa: F401

        import hal
        import hal.backends.numpy.stored  # noqa: F401
        import hal.cost  # noqa: F401
        import hal.execution  # noqa: F401 - the first execution plan's (see below)

        from .. import (  # noqa: F401
            checkpoint,
            customize,
            data,
            distributed,
            footprint,
            io,
            learner,
            lowmem,
            nn,
            rebuild,
            transform,
            warmup,
        )
        from ..nn import classifier, layers, network, optim, trainer  # noqa: F401
        hal.get_backend(args.backend)
        # the window-policy rule's first np.unique imports code lazily (~1 MB of code
        # objects): imported here, before the measure, like the modules above
        from ..data import label_runs
        label_runs(np.array([0, 1, 1, 0]), 2)
        _presize_interned()
        tracemalloc.start()
    if args.shuffle is not None and args.shuffle < 0:
        raise CommandError(f"--shuffle must be >= 0, got {args.shuffle}")
    for name in ("chunk", "checkpoint_every", "limit"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise CommandError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    lr = args.learning_rate
    if lr is not None and not (lr > 0 and lr != float("inf")):
        raise CommandError(f"--learning-rate must be a positive finite number, got {lr!r}")
    # the budget arguments choose a plan; beside one given, or a run resumed, they used to
    # be ignored without a word (a dictionary dtype asked for and silently not used):
    # beside --plan they are an error; on --resume (often the first command run again) a
    # warning, as the checkpoint's choices stand
    given = [f"--{n.replace('_', '-')}" for n in BUDGET_ARGS
             if getattr(args, n, None) is not None]
    if given and args.plan:
        raise CommandError(f"{', '.join(given)} choose{'s' if len(given) == 1 else ''} a "
                           "plan; with --plan the plan's choices stand (make a new plan: "
                           "tinydl plan ... -o PLAN.json)")

    if args.backend:
        import hal
        hal.select_backend(args.backend)  # an unknown or unavailable backend fails here
    st = open_stream(args.data, labels=args.labels, label_column=args.label_column)
    classes = np.unique(st.y)
    if classes.size < 2:
        raise CommandError(f"{args.data}: the labels hold {classes.size} class; need >= 2")
    n_total = st.n_samples if args.limit is None else min(args.limit, st.n_samples)
    out = args.output
    has_ckpt = os.path.exists(os.path.join(out, "LATEST"))
    if has_ckpt and not args.resume:
        raise CommandError(f"{out} already holds a checkpoint; pass --resume to continue it, "
                           "or choose another directory")
    if args.resume and not has_ckpt:
        print(f"tinydl fit: no checkpoint in {out} yet: starting a new run", file=sys.stderr,
              flush=True)
    elif given and args.resume:
        print(f"tinydl fit: warning: {', '.join(given)} ignored: --resume continues the "
              "checkpoint's plan", file=sys.stderr, flush=True)
    Learner = _learner_class(args)
    plan = None
    seed = _shuffle_seed(args, out, args.resume and has_ckpt)
    if seed is not None:
        st = st.shuffled(seed)
    if args.resume and has_ckpt:
        learner = Learner.load(out, backend=args.backend or _plan_backend(out))
        if learner.n_features_in_ != st.n_features:
            raise CommandError(f"{out} was trained on {learner.n_features_in_} features; "
                               f"{args.data} has {st.n_features}")
        extra = np.setdiff1d(classes, learner.classes_)
        if extra.size:
            raise CommandError(f"{args.data} has classes {extra[:5].tolist()} that the "
                               f"checkpoint in {out} does not know")
    else:
        if args.plan:
            plan = load_plan(args.plan)
            if plan.m != st.n_features:
                raise CommandError(f"the plan {args.plan} is for m={plan.m} features; "
                                   f"{args.data} has {st.n_features}")
        else:
            rows = tuning_rows(st)
            X = rows if args.target_error is not None else None
            sample = tuning_sample(st, 1.0, ALPHA_ROWS)
            plan = make_plan(args, st.n_features, int(classes.size), X, n_samples=n_total,
                             scaling_rows=rows, alpha_rows=sample[0], row_labels=sample[1])
        # the candidates weighed are for `tinydl plan --explain`; a long run need not hold them
        plan = dataclasses.replace(plan, candidates=())
        from ..data import label_runs
        # an "auto" window policy follows the stream as it will be streamed: the paper's
        # sliding window unless its labels arrive in blocks (then the reservoir)
        blocked = label_runs(st.y[:n_total], plan.n_batch)["blocked"]
        params = plan.learner_params(blocked=blocked)
        params["backend"] = plan.backend_object()  # workspaces sized as the plan priced them
        params["dtype"] = args.dtype if args.plan is None else plan.dtype
        for name in _OVERRIDES:
            v = getattr(args, name)
            if v is not None:
                params[name] = v
        if args.hidden:
            params["hidden_layer_sizes"] = _hidden(args.hidden)
        if args.optimizer:
            from ..learner import optimizer_params
            params.update(optimizer_params(args.optimizer))
        if args.learning_rate is not None:
            params["learning_rate"] = float(args.learning_rate)
        if args.backend:
            params["backend"] = args.backend
        learner = Learner(**params, seed=args.seed)
        os.makedirs(out, exist_ok=True)
    every = args.checkpoint_every or 16 * int(learner.n_batch)
    learner.checkpoint_dir, learner.checkpoint_every = out, every
    rank = int(getattr(learner, "rank", 0))
    plan_file = None
    if plan is not None and rank == 0:
        plan_file = os.path.join(out, "plan.json")
        plan.save(plan_file)
        from ..io import atomic_write_text
        atomic_write_text(os.path.join(out, _STREAM_FILE),
                          json.dumps({"shuffle": seed, "n_samples": st.n_samples}) + "\n")
    chunk = args.chunk or (plan.chunk if plan is not None else 256)
    start = learner.n_samples_consumed_ if hasattr(learner, "transform_") else 0
    # a bad row stops the run before anything is learned, naming its row in the file; the
    # chunks below are then checked once, by the learner
    st.validate(chunk, learner.dtype, start, n_total)
    if seed is None and rank == 0 and start == 0:
        _warn_blocked(st, 0, n_total, int(learner.n_batch))
    prog = Progress(n_total, "fit", enabled=not args.quiet and rank == 0)
    predicted = None if plan is None else int(plan.footprint_bytes)
    if plan_file is not None:
        # the plan (its buffer list and reasons, ~25 kB of Python objects) is the command's,
        # not the learner's: read back from its file for the result, not held while streaming
        plan = None
    base = 0
    if args.trace_memory:
        # the learner's peak is measured from here: opening the data (a deflated .npz member
        # is unpacked whole, its compressed bytes beside it), the labels' classes and the
        # plan are the command's one-time work, and what it holds from then on (the data
        # resident in memory, the labels, the permutation, the readers' caches) is the
        # command's, not the learner's (whose buffers are all made on its first chunk)
        import tracemalloc
        tracemalloc.reset_peak()
        base = int(tracemalloc.get_traced_memory()[0])
    t0 = time.perf_counter()
    dtype = learner.dtype
    for s, X, y in st.chunks(chunk, start, n_total, dtype=dtype, check=False):
        learner.partial_fit(X, y, classes=classes)
        prog.update(s + len(X))
        del X, y  # else this chunk stays alive while the generator reads the next one
    learner.finish()
    path = learner.save(out)
    seconds = time.perf_counter() - t0
    prog.close()
    result = dict(model=out, checkpoint=path, backend=learner.backend_,
                  samples=int(learner.n_samples_seen_),
                  streamed_now=int(n_total - start), resumed_from=int(start),
                  seconds=seconds, n_atoms=int(learner.transform_.n_atoms_),
                  n_updates=int(learner.n_updates_), n_params=int(learner.n_params_),
                  params=learner.get_params(), shuffle=seed)
    result["params"]["hidden_layer_sizes"] = list(result["params"]["hidden_layer_sizes"])
    be = result["params"]["backend"]
    if be is not None and not isinstance(be, str):
        result["params"]["backend"] = be.name
    if args.trace_memory:
        import tracemalloc
        # peak_traced_bytes: the peak while streaming, everything the process holds
        # included; peak_learner_bytes: less what the command held when the stream began
        # (command_resident_bytes, of which stream_resident_bytes is the data file's own
        # bytes in memory: a deflated .npz is read whole) - what the plan predicts
        result["peak_traced_bytes"] = int(tracemalloc.get_traced_memory()[1])
        result["stream_resident_bytes"] = int(st.resident_bytes)
        result["command_resident_bytes"] = base
        result["peak_learner_bytes"] = result["peak_traced_bytes"] - base
        tracemalloc.stop()
        from ..footprint import measured_buffers
        result["measured_buffers"] = measured_buffers(learner)
    if plan_file is not None:  # after the measure: reading it back is the command's
        plan = load_plan(plan_file)
    if plan is not None:
        result["plan"] = plan.to_dict()
    if rank != 0:
        return 0
    if args.json:
        emit_json(result, args.json)
        if args.json == "-":
            return 0
    if start:
        print(f"resumed at sample {start}")
    print(f"fit: {result['streamed_now']} samples in {seconds:.2f} s "
          f"({result['streamed_now'] / max(seconds, 1e-9):,.0f} samples/s); dictionary "
          f"{result['n_atoms']}/{learner.l} atoms, {result['n_updates']} network updates, "
          f"{result['n_params']} parameters")
    if args.trace_memory:
        line = f"peak memory (tracemalloc): {result['peak_traced_bytes']:,} bytes"
        line += f" (learner {result['peak_learner_bytes']:,})"
        if predicted is not None:
            line += f"; plan predicted {predicted:,}"
        print(line)
    print(f"model: {out} (tinydl evaluate {out} --data TEST)")
    return 0
