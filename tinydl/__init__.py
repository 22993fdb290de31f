"""tinydl: deep networks that learn and run on small devices.

* :func:`tinydl.omp` -- batched Orthogonal Matching Pursuit (TinyDL's Algorithm 1);
* :class:`tinydl.StreamingDictionary` -- the streaming sparse-coding transform (Algorithm 2);
* the trainer, the TinyDL learner, the customizer and SparseSep compression build on them.

Heavy operations run through the hardware abstraction layer :mod:`hal`.
"""
from .codes import SparseCodes, codes_to_dense
from .errors import BudgetInfeasible, DataError, DivergenceError, ModelFileError, NotFittedError
from .io import load_npz, save_npz
from .omp import omp
from .transform import StreamingDictionary

__version__ = "0.1.0"

__all__ = ["omp", "SparseCodes", "codes_to_dense", "StreamingDictionary", "NotFittedError",
           "ModelFileError", "DataError", "DivergenceError", "BudgetInfeasible", "save_npz",
           "load_npz", "__version__"]
