"""The data-format flags shared by train, evaluate and inspect.

``--format``, ``--encoding``, ``--classes-file``, ``--resize-masks``, ``--skip-bad/--no-skip-bad``,
``--max-image-pixels``: how a data set on disk is read. They are the TrainConfig fields of group
``format`` (names, choices and help come from their metadata); the choices import no torch.
"""

from __future__ import annotations

from .config_flags import add_field_flag, add_old_spelling, cli_fields

# Earlier spellings, still accepted (hidden from --help, with a note on stderr).
OLD_SPELLINGS = {"classes_file": "--classes", "max_image_pixels": "--max-pixels"}


def add_data_flags(g, defaults=None) -> None:
    """Add the data-format flags to ``g`` (a parser or an argument group).

    ``defaults``: a TrainConfig whose values are the defaults (inspect), or None (evaluate): every
    option then defaults to None, meaning "as the model was trained". The parsed attributes are
    ``format``, ``encoding``, ``classes_file``, ``resize_masks``, ``skip_bad``, ``max_image_pixels``.
    """
    for f in cli_fields("format"):
        if defaults is None:
            action = add_field_flag(g, f, default=None, shown_default="as the model was trained")
        else:
            action = add_field_flag(g, f, default=getattr(defaults, f.name))
        if f.name in OLD_SPELLINGS:
            add_old_spelling(g, OLD_SPELLINGS[f.name], action)
