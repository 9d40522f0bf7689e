"""pixelwise: semantic segmentation from a folder of images and masks.

Python API (the CLI calls exactly these)::

    import pixelwise
    result = pixelwise.train(data="DATA", out="runs/mine", epochs=20)
    metrics = pixelwise.evaluate("runs/mine", "DATA", split="val")
    seg = pixelwise.load("runs/mine")
    mask = seg.predict("image.jpg")          # (H, W) int64 class indices
"""

from importlib import import_module

from .errors import PixelwiseError
from .version import __version__

# Public name -> the module that defines it. Imported on first use, so that `import pixelwise`
# and `pixelwise --help` never load PyTorch.
_API = {
    "train": "training.trainer",
    "TrainResult": "training.trainer",
    "TrainConfig": "training.config",
    "load": "predict",
    "load_ensemble": "predict",
    "load_predictor": "predict",
    "Segmenter": "predict",
    "Ensemble": "predict",
    "Predictor": "predict",
    "InferenceConfig": "predict",
    "InstanceOptions": "predict",
    "predict_files": "predict",
    "PostprocessConfig": "postprocess",
    "evaluate": "evaluation",
    "inspect_data": "inspection",
    "export_model": "export",
    "run_demo": "demo",
}


def __getattr__(name):
    if name in _API:
        return getattr(import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'pixelwise' has no attribute {name!r}")


__all__ = ["PixelwiseError", "__version__", *_API]
