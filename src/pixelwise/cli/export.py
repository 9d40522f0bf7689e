"""``pixelwise export``: write a run as ONNX or TorchScript, checked against PyTorch."""

from __future__ import annotations

import argparse

from .arguments import real_number, whole_number

# pixelwise.export.FORMATS, DEFAULT_TOLERANCE, MAX_TOLERANCE, OPSET_MIN and OPSET_MAX, repeated so that building
# the parser imports no torch; a test checks they match.
EXPORT_FORMATS = ("onnx", "torchscript")
DEFAULT_TOLERANCE = 1e-3
MAX_TOLERANCE = 1.0
OPSET_MIN, OPSET_MAX = 11, 23


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``export`` subcommand to ``subparsers``."""
    p = subparsers.add_parser(
        "export",
        help="export a run to ONNX or TorchScript, checked against PyTorch",
        description="Write RUN/model.onnx (or model.torchscript.pt) with dynamic batch, height and "
        "width; input: (N, 3, H, W) float RGB in [0, 1], output: (N, C, H, W) logits (C + 3 channels for "
        "instance and panoptic models: centre heatmap and offsets; the grouping into objects runs after the "
        "network, in Python, and is not in the file). "
        "The file is kept only if its outputs match PyTorch within --tolerance.",
    )
    p.add_argument("run", help="run directory")
    p.add_argument("--format", choices=list(EXPORT_FORMATS), default="onnx", help="default %(default)s")
    p.add_argument("--out", default=None, help="output file (default RUN/model.onnx or RUN/model.torchscript.pt)")
    p.add_argument(
        "--opset",
        type=whole_number(OPSET_MIN, OPSET_MAX),
        default=17,
        help=f"ONNX opset, {OPSET_MIN} to {OPSET_MAX} (default %(default)s)",
    )
    p.add_argument(
        "--tolerance",
        type=real_number(above=0, maximum=MAX_TOLERANCE),
        default=DEFAULT_TOLERANCE,
        help=f"largest allowed |exported - PyTorch| logit difference, at most {MAX_TOLERANCE:g} (default %(default)s)",
    )
    return p


def run(args) -> int:
    """Export as ``args`` says; print the parity check and the file written."""
    from ..export import export_model

    res = export_model(args.run, args.format, args.out, opset=args.opset, tolerance=args.tolerance)
    sizes = ", ".join("x".join(str(v) for v in s) for s in res["sizes"])
    print(
        f"parity with PyTorch: max |difference| = {res['max_abs_diff']:.3g} on inputs {sizes} "
        f"(tolerance {args.tolerance:g})"
    )
    if res.get("note"):
        print(res["note"])
    print(f"wrote {res['path']}")
    return 0
