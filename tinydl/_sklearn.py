"""scikit-learn's estimator tags for tinydl's estimators, built only when scikit-learn asks
(``__sklearn_tags__``, scikit-learn >= 1.6); scikit-learn stays an optional dependency."""
from __future__ import annotations

__all__ = ["classifier_tags", "transformer_tags"]


def _input_tags(sparse: bool = False):
    from sklearn.utils import InputTags
    return InputTags(two_d_array=True, sparse=sparse, allow_nan=False)


def transformer_tags(est, *, preserves_dtype=("float64", "float32")):
    """Tags of an unsupervised transformer (``fit(X, y=None)``, ``transform``)."""
    from sklearn.utils import Tags, TargetTags, TransformerTags
    return Tags(estimator_type=None, target_tags=TargetTags(required=False),
                transformer_tags=TransformerTags(preserves_dtype=list(preserves_dtype)),
                input_tags=_input_tags())


def classifier_tags(est, *, multi_label=False, poor_score=False, transformer_dtypes=None):
    """Tags of a classifier (``fit(X, y)``, ``predict``, ``predict_proba``); with
    ``transformer_dtypes`` (the dtypes its ``transform`` keeps), also a transformer."""
    from sklearn.utils import ClassifierTags, Tags, TargetTags, TransformerTags
    return Tags(estimator_type="classifier", target_tags=TargetTags(required=True),
                classifier_tags=ClassifierTags(poor_score=poor_score, multi_label=multi_label),
                transformer_tags=(None if transformer_dtypes is None else
                                  TransformerTags(preserves_dtype=list(transformer_dtypes))),
                input_tags=_input_tags())
