"""SparseSep (Bhattacharya & Lane, SenSys 2016): compress a trained network for inference,
without retraining.

* :mod:`.factorize` -- dense layers: truncated SVD ``W ~ U V``, sparse dictionary ``W ~ B S``
  (K-SVD over tinydl's OMP), plain or data-aware (fitted to the layer's outputs);
* :mod:`.conv` -- convolutions: per-kernel and cross-channel separation, data-aware channel
  reduction;
* :mod:`.quantize` -- int8 weights with per-output-channel scales, stacked on the above;
* :mod:`.model` -- the compressed model (layers of named arrays); :mod:`.kernels` its
  forward kernels; :mod:`.files` its ``.npz`` files (and loading any model);
* :mod:`.compiler` -- per-layer binary search under an accuracy budget, device targets, report;
* :mod:`.runtime` -- layer-at-a-time inference from a memory-mapped file, peak predicted first;
* :mod:`.onnx_io` -- ONNX import and export (imports ``onnx`` only when called).
"""
from .compiler import (
    CRITERIA,
    METHODS,
    QUANTIZE,
    BudgetInfeasible,
    CompressionReport,
    LayerReport,
    compress_model,
    predict_time,
)
from .conv import (
    conv_output_gram,
    cross_channel_max_rank,
    kernel_max_rank,
    reduce_channels,
    reduce_max_rank,
    separate_cross_channel,
    separate_kernels,
)
from .factorize import (
    DenseFactorizer,
    FactorizationCostError,
    SparseFactorizer,
    SparseFactors,
    relative_error,
    sparse_factorize,
    svd_factorize,
    svd_max_rank,
)
from .files import load_any_model, load_model, save_model
from .model import CLayer, CompressedModel, from_network
from .quantize import is_quantized, quantize_array, quantize_layer
from .runtime import SparseRuntime, predict_peak_bytes


def import_onnx(*args, **kwargs):
    """See :func:`tinydl.compress.onnx_io.import_onnx` (imports onnx on first call)."""
    from .onnx_io import import_onnx as f
    return f(*args, **kwargs)


def export_onnx(*args, **kwargs):
    """See :func:`tinydl.compress.onnx_io.export_onnx` (imports onnx on first call)."""
    from .onnx_io import export_onnx as f
    return f(*args, **kwargs)


__all__ = ["compress_model", "CompressionReport", "LayerReport", "BudgetInfeasible", "METHODS",
           "predict_time", "svd_factorize", "sparse_factorize", "DenseFactorizer",
           "SparseFactorizer", "SparseFactors", "FactorizationCostError", "relative_error",
           "svd_max_rank", "separate_kernels", "separate_cross_channel", "kernel_max_rank",
           "cross_channel_max_rank", "CLayer", "CompressedModel", "from_network", "save_model",
           "load_model", "load_any_model", "SparseRuntime", "predict_peak_bytes",
           "import_onnx", "export_onnx", "CRITERIA", "QUANTIZE", "quantize_array",
           "quantize_layer", "is_quantized", "reduce_channels", "reduce_max_rank",
           "conv_output_gram"]
