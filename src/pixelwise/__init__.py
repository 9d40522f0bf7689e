"""pixelwise: semantic segmentation from a folder of images and masks.

Python API (the CLI calls exactly these)::

    import pixelwise
    result = pixelwise.train(data="DATA", out="runs/mine", epochs=20)
    metrics = pixelwise.evaluate("runs/mine", "DATA", split="val")
    seg = pixelwise.load("runs/mine")
    mask = seg.predict("image.jpg")          # (H, W) int64 class indices
"""

from .errors import PixelwiseError  # noqa: E402
from .version import __version__


def __getattr__(name):
    # Imported lazily so that `import pixelwise` and `pixelwise --help` stay fast.
    if name == "TrainConfig":
        from .training.config import TrainConfig

        return TrainConfig
    if name in ("train", "TrainResult"):
        from .training import trainer as _t

        return getattr(_t, name)
    if name in (
        "load",
        "Segmenter",
        "predict_files",
        "Ensemble",
        "load_ensemble",
        "InferenceConfig",
        "Predictor",
        "load_predictor",
    ):
        from . import predict as _p

        return getattr(_p, name)
    if name == "PostprocessConfig":
        from .postprocess import PostprocessConfig

        return PostprocessConfig
    if name == "export_model":
        from .export import export_model

        return export_model
    if name == "evaluate":
        from .evaluation import evaluate

        return evaluate
    if name == "inspect_data":
        from .inspection import inspect_data

        return inspect_data
    if name == "run_demo":
        from .demo import run_demo

        return run_demo
    raise AttributeError(f"module 'pixelwise' has no attribute {name!r}")


__all__ = [
    "PixelwiseError",
    "train",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "load",
    "Segmenter",
    "predict_files",
    "run_demo",
    "inspect_data",
    "__version__",
    "Ensemble",
    "load_ensemble",
    "InferenceConfig",
    "PostprocessConfig",
    "export_model",
]
