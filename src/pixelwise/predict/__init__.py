"""Inference: the engine (tiling, test-time augmentation, uncertainty), the backends that run a
network, the segmenters that wrap one model or an ensemble, the Predictor that adds the
inference options and post-processing, and folder prediction."""

from .batch import collect_inputs, predict_files
from .engine import InferenceConfig, Prediction
from .predictor import (
    BaseSegmenter,
    Ensemble,
    InstanceOptions,
    ObjectResult,
    Predictor,
    Segmenter,
    is_run_dir,
    load,
    load_ensemble,
    load_predictor,
)

__all__ = [
    "InferenceConfig",
    "Prediction",
    "BaseSegmenter",
    "Ensemble",
    "InstanceOptions",
    "ObjectResult",
    "Predictor",
    "Segmenter",
    "collect_inputs",
    "is_run_dir",
    "load",
    "load_ensemble",
    "load_predictor",
    "predict_files",
]
