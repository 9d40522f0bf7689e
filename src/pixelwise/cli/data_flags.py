"""The data-format flags shared by train, evaluate and inspect.

``--format``, ``--encoding``, ``--classes``, ``--resize-masks``, ``--skip-bad``, ``--max-pixels``:
how a data set on disk is read. The data modules these choices come from import no torch.
"""

from __future__ import annotations

from .arguments import positive_int


def add_data_flags(g, defaults=None) -> None:
    """Add the data-format flags to ``g`` (a parser or an argument group).

    ``defaults`` None (evaluate): every option defaults to None, meaning what the model was trained with.
    """
    from ..data.encodings import DEFAULT_MAX_PIXELS, ENCODINGS
    from ..data.formats import FORMATS

    def d(name, fallback):
        return getattr(defaults, name) if defaults is not None else fallback

    g.add_argument(
        "--format",
        choices=["auto", *FORMATS],
        default=d("format", None),
        help="data set layout; auto = detected and printed (default auto)",
    )
    g.add_argument(
        "--encoding",
        choices=list(ENCODINGS),
        default=d("encoding", None),
        help="how mask pixels are stored; auto = detected and printed (default auto)",
    )
    g.add_argument(
        "--classes",
        dest="classes_file",
        default=d("classes_file", None),
        metavar="FILE",
        help="classes YAML (names, colors, ignore_index, ignore_color) to use instead of the data set's",
    )
    g.add_argument(
        "--resize-masks",
        choices=["nearest"],
        default=d("resize_masks", None),
        help="resize a mask whose size differs from its image (default: that is an error)",
    )
    g.add_argument(
        "--skip-bad",
        action="store_true",
        default=d("skip_bad", None),
        help="leave out samples with problems (listed) instead of stopping",
    )
    g.add_argument(
        "--max-pixels",
        type=positive_int,
        default=d("max_pixels", None),
        help=f"refuse images/masks with more pixels (default {DEFAULT_MAX_PIXELS:,})",
    )
