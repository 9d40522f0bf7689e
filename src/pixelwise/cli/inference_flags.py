"""The inference flags shared by predict, evaluate and serve, and the Predictor they describe.

Every command that labels images takes the same options, so a score from ``evaluate`` is the
score of what ``predict`` writes and ``serve`` answers with the same flags:

* model: ``--backend``, ``--onnx``, ``--precision``, ``--device``;
* large images: ``--tile``, ``--tile-size``, ``--tile-overlap``, ``--blend``, ``--tile-batch``,
  ``--tile-above``;
* test-time augmentation: ``--hflip``, ``--vflip``, ``--scales``, ``--mc-dropout``;
* post-processing: ``--min-size``, ``--fill-holes``, ``--crf``, ``--crf-iterations``, ``--crf-backend``;
* objects: ``--instances``, ``--things``, ``--centre-threshold``, ``--min-object-area``, ``--stuff-run``
  (an :class:`~pixelwise.predict.InstanceOptions`, and a semantic run whose labels give the stuff).

Each flag is the field of :class:`~pixelwise.predict.InferenceConfig` or
:class:`~pixelwise.postprocess.PostprocessConfig` of the same name with dashes (or the keyword of
:func:`~pixelwise.predict.load_predictor`: ``backend``, ``precision``, ``device``; ``--onnx`` is
``onnx_path``). Adding the flags imports no torch.
"""

from __future__ import annotations

import argparse

from .arguments import class_names, positive_int, real_number, run_folder, scales, whole_number

# Choices and defaults of pixelwise.predict.engine (TILE_MODES, BLENDS, InferenceConfig),
# pixelwise.predict.backends (BACKENDS, PRECISIONS) and pixelwise.postprocess (CRF_BACKENDS,
# PostprocessConfig, MAX_CRF_ITERATIONS) and their upper bounds (MAX_TILE_SIZE, MAX_TILE_BATCH,
# MAX_MC_DROPOUT), repeated so that building the parser imports no torch; a test checks they match.
TILE_MODES = ("auto", "always", "never")
BLENDS = ("gaussian", "linear", "constant")
BACKENDS = ("auto", "torch", "onnxruntime")
PRECISIONS = ("fp32", "bf16")
CRF_BACKENDS = ("auto", "pydensecrf", "torch")
INFERENCE_DEFAULTS = dict(
    tile="auto",
    tile_size=1024,
    tile_overlap=0.25,
    blend="gaussian",
    tile_batch=2,
    tile_above=2048 * 2048,
    scales=(1.0,),
)
POSTPROCESS_DEFAULTS = dict(crf_iterations=5)
MAX_TILE_SIZE, MAX_TILE_BATCH, MAX_MC_DROPOUT, MAX_CRF_ITERATIONS = 16384, 1024, 1000, 100
# pixelwise.predict.predictor.INSTANCE_METHODS and the GroupingConfig defaults of pixelwise.instances.
INSTANCE_METHODS = ("auto", "centres", "components", "off")
GROUPING_DEFAULTS = dict(centre_threshold=0.1, min_area=16)
# Bounds: a centre heat value is a probability; an object larger than an image of 2**31 pixels is none.
MAX_OBJECT_AREA = 2**31 - 1

INFERENCE_FIELDS = (
    "tile",
    "tile_size",
    "tile_overlap",
    "blend",
    "tile_batch",
    "tile_above",
    "hflip",
    "vflip",
    "scales",
    "mc_dropout",
)
POSTPROCESS_FIELDS = ("min_size", "fill_holes", "crf", "crf_iterations", "crf_backend")


def add_inference_flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Add every inference flag to ``parser``, in argument groups; returns the actions by dest.

    The parsed attributes are the fields of ``INFERENCE_FIELDS`` and ``POSTPROCESS_FIELDS`` plus
    ``backend``, ``onnx_path``, ``precision`` and ``device``.
    """
    actions: dict[str, argparse.Action] = {}
    _add_model_flags(parser.add_argument_group("model and backend"), actions)
    _add_tiling_flags(parser.add_argument_group("large images (sliding window)"), actions)
    _add_tta_flags(parser.add_argument_group("test-time augmentation"), actions)
    _add_postprocess_flags(parser.add_argument_group("post-processing"), actions)
    _add_object_flags(parser.add_argument_group("objects (instance and panoptic models)"), actions)
    return actions


def _add(group, actions: dict, *names: str, **kw) -> None:
    action = group.add_argument(*names, **kw)
    actions[action.dest] = action


def _add_model_flags(g, actions: dict) -> None:
    _add(g, actions, "--device", default="auto", help="auto, cpu, cuda, cuda:N (default %(default)s)")
    _add(
        g,
        actions,
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="auto (default: ONNX Runtime on CPU when available), torch, onnxruntime (RUN/model.onnx "
        "from `pixelwise export`, else exported in memory)",
    )
    _add(g, actions, "--onnx", dest="onnx_path", default=None, metavar="FILE", help="ONNX file to run (one run only)")
    _add(
        g,
        actions,
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="bf16: PyTorch bfloat16 autocast, faster on GPUs and CPUs with AMX/AVX512-BF16, "
        "probabilities within about 1e-2 of fp32 (default %(default)s)",
    )


def _add_tiling_flags(t, actions: dict) -> None:
    d = INFERENCE_DEFAULTS
    _add(
        t,
        actions,
        "--tile",
        choices=TILE_MODES,
        default=d["tile"],
        help="auto: tile images above --tile-above pixels; always; never (default %(default)s)",
    )
    _add(
        t,
        actions,
        "--tile-size",
        type=whole_number(1, MAX_TILE_SIZE),
        default=d["tile_size"],
        help=f"tile side, 1 to {MAX_TILE_SIZE} (default %(default)s)",
    )
    _add(
        t,
        actions,
        "--tile-overlap",
        type=real_number(0.0, below=1.0),
        default=d["tile_overlap"],
        help="overlap share, 0 to below 1 (default %(default)s)",
    )
    _add(t, actions, "--blend", choices=BLENDS, default=d["blend"], help="tile blending window (default %(default)s)")
    _add(
        t,
        actions,
        "--tile-batch",
        type=whole_number(1, MAX_TILE_BATCH),
        default=d["tile_batch"],
        help=f"tiles per forward pass, 1 to {MAX_TILE_BATCH}; bounds the memory (default %(default)s)",
    )
    _add(
        t,
        actions,
        "--tile-above",
        type=positive_int,
        default=d["tile_above"],
        metavar="PIXELS",
        help="with --tile auto: tile images of more pixels than this, width x height (default %(default)s)",
    )


def _add_tta_flags(a, actions: dict) -> None:
    _add(a, actions, "--hflip", action="store_true", help="average with the mirrored image")
    _add(a, actions, "--vflip", action="store_true", help="average with the upside-down image")
    _add(
        a,
        actions,
        "--scales",
        type=scales,
        default=INFERENCE_DEFAULTS["scales"],
        metavar="S1,S2,...",
        help="average over these resize factors, e.g. 0.75,1,1.25 (default 1)",
    )
    _add(
        a,
        actions,
        "--mc-dropout",
        type=whole_number(0, MAX_MC_DROPOUT),
        default=0,
        metavar="N",
        help=f"N stochastic passes with dropout on, at most {MAX_MC_DROPOUT}; adds a variance map (model needs dropout)",
    )


def _add_postprocess_flags(q, actions: dict) -> None:
    count = whole_number(0)
    _add(q, actions, "--min-size", type=count, default=0, metavar="N", help="remove regions smaller than N pixels")
    _add(q, actions, "--fill-holes", type=count, default=0, metavar="N", help="fill enclosed holes of up to N pixels")
    _add(q, actions, "--crf", action="store_true", help="refine boundaries with a dense CRF on the image colours")
    _add(
        q,
        actions,
        "--crf-iterations",
        type=whole_number(1, MAX_CRF_ITERATIONS),
        default=POSTPROCESS_DEFAULTS["crf_iterations"],
        help=f"mean-field updates, 1 to {MAX_CRF_ITERATIONS} (default %(default)s)",
    )
    _add(
        q,
        actions,
        "--crf-backend",
        choices=CRF_BACKENDS,
        default="auto",
        help="auto: pydensecrf when installed, else the PyTorch mean-field CRF",
    )


def _add_object_flags(g, actions: dict) -> None:
    _add(
        g,
        actions,
        "--instances",
        choices=INSTANCE_METHODS,
        default="auto",
        help="split the labels into objects: auto (centres for instance/panoptic models, off for semantic "
        "ones), centres (the model's centre heat map and offsets), components (connected regions of the "
        "thing classes, touching ones split; any model), off (default %(default)s)",
    )
    _add(
        g,
        actions,
        "--things",
        type=class_names,
        default=(),
        metavar="NAME[,NAME]",
        help="the classes that are countable objects, by name (default: the model's)",
    )
    _add(
        g,
        actions,
        "--centre-threshold",
        type=real_number(0.0, 1.0),
        default=None,
        metavar="P",
        help=f"lowest centre heat value (0 to 1) that starts an object (default {GROUPING_DEFAULTS['centre_threshold']})",
    )
    _add(
        g,
        actions,
        "--min-object-area",
        type=whole_number(1, MAX_OBJECT_AREA),
        default=None,
        metavar="PIXELS",
        help=f"drop objects of fewer pixels (default {GROUPING_DEFAULTS['min_area']})",
    )
    _add(
        g,
        actions,
        "--stuff-run",
        type=run_folder,
        default=None,
        metavar="RUN",
        help="a semantic run whose labels give the stuff classes of the panoptic output (classes matched by name)",
    )


def instance_options(args):
    """The :class:`~pixelwise.predict.InstanceOptions` the object flags describe; None when every one of
    them is at its default (the Predictor's own default then applies)."""
    things = tuple(getattr(args, "things", ()) or ())
    threshold = getattr(args, "centre_threshold", None)
    min_area = getattr(args, "min_object_area", None)
    method = getattr(args, "instances", "auto")
    if method == "auto" and not things and threshold is None and min_area is None:
        return None
    from ..instances import GroupingConfig
    from ..predict.predictor import InstanceOptions

    grouping = {"centre_threshold": threshold, "min_area": min_area}
    grouping = GroupingConfig(**{k: v for k, v in grouping.items() if v is not None})
    return InstanceOptions(method=method, things=things, grouping=grouping)


def inference_options(args):
    """``(InferenceConfig, PostprocessConfig)`` from parsed inference flags."""
    from ..postprocess import PostprocessConfig
    from ..predict.engine import InferenceConfig

    inference = InferenceConfig(**{k: getattr(args, k) for k in INFERENCE_FIELDS})
    postprocess = PostprocessConfig(**{k: getattr(args, k) for k in POSTPROCESS_FIELDS})
    return inference, postprocess


def predictor_options(args) -> dict:
    """The keywords of :func:`~pixelwise.predict.load_predictor` (and of ``evaluate``) the flags set."""
    inference, postprocess = inference_options(args)
    options = dict(
        device=args.device,
        backend=args.backend,
        precision=args.precision,
        inference=inference,
        postprocess=postprocess,
        onnx_path=args.onnx_path,
    )
    return {**options, **object_options(args)}


def object_options(args) -> dict:
    """``instances`` (an InstanceOptions) and ``stuff_run`` keywords, only those the flags set: a
    command without object flags passes none of them."""
    options = {}
    instances = instance_options(args)
    if instances is not None:
        options["instances"] = instances
    if getattr(args, "stuff_run", None):
        options["stuff_run"] = args.stuff_run
    return options


def build_predictor(args, runs: list[str]):
    """The :class:`~pixelwise.predict.Predictor` the inference flags describe, over ``runs`` (with the
    labels of ``--stuff-run`` for the stuff classes when given)."""
    from ..predict.batch import load_object_predictor

    return load_object_predictor(runs, **predictor_options(args))
