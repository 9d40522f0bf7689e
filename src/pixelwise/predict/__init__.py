"""Inference: the engine (tiling, test-time augmentation, uncertainty), the backends that run a
network, the predictors that wrap one model or an ensemble, and folder prediction."""

from .engine import InferenceConfig, Prediction
from .predictor import Ensemble, Segmenter, is_run_dir, load, load_ensemble, predict_files

__all__ = [
    "InferenceConfig",
    "Prediction",
    "Ensemble",
    "Segmenter",
    "is_run_dir",
    "load",
    "load_ensemble",
    "predict_files",
]
