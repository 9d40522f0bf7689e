"""Pair images with masks by file stem: the one rule every reader that pairs files follows.

``a.jpg`` pairs with ``a.png``; a stem with two images (``a.jpg`` and ``a.png``) or two masks is
ambiguous and left out, an image without a mask or a mask without an image is reported. Nothing
here raises: the problems go back to the caller, which stops at them (training) or lists them
all (``pixelwise inspect``).
"""

from __future__ import annotations

from pathlib import Path

from .types import Problem, Sample


def files_by_stem(folder: Path, extensions: tuple[str, ...], foreign: list[str] | None = None) -> dict[str, list[Path]]:
    """The files of ``folder`` with one of ``extensions`` (any case), by stem, in name order.

    Hidden files and sub-folders are skipped; a missing folder holds nothing. Other files are
    appended to ``foreign`` when it is given.
    """
    out: dict[str, list[Path]] = {}
    if not folder.is_dir():
        return out
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name.startswith("."):
            continue
        if p.suffix.lower() in extensions:
            out.setdefault(p.stem, []).append(p)
        elif foreign is not None:
            foreign.append(str(p))
    return out


def pair_by_stem(
    images: dict[str, list[Path]], masks: dict[str, list[Path]], mask_hint: str, where: str = ""
) -> tuple[list[Sample], list[Problem]]:
    """Samples for the stems with exactly one image and one mask, sorted by stem; problems for the rest.

    ``images`` and ``masks`` map a stem to its files. ``mask_hint`` says where a missing mask
    belongs ("add <mask_hint> or remove the images"); ``where`` names the folder in the titles.
    """
    place = f" in {where}" if where else ""
    problems: list[Problem] = []
    bad: set[str] = set()
    for what, table in (("image", images), ("mask", masks)):
        dup = {s: ps for s, ps in table.items() if len(ps) > 1}
        if dup:
            problems.append(
                Problem(
                    f"stems have more than one {what}{place}",
                    "keep one file per stem",
                    [f"{s} ({', '.join(p.name for p in ps)})" for s, ps in dup.items()],
                    stems=[s for s in dup if s in images],
                    one=f"stem has more than one {what}{place}",
                )
            )
            bad |= set(dup)
    missing = [s for s in images if s not in masks]
    if missing:
        problems.append(
            Problem(
                f"images{place} have no mask",
                f"add {mask_hint} or remove the images",
                [str(images[s][0]) for s in missing],
                stems=missing,
                one=f"image{place} has no mask",
            )
        )
    orphans = [s for s in masks if s not in images]
    if orphans:
        problems.append(
            Problem(
                f"masks{place} have no image",
                "add the images or remove the masks" + _suffix_hint(missing, orphans),
                [str(masks[s][0]) for s in orphans],
                one=f"mask{place} has no image",
            )
        )
    samples = [Sample(s, images[s][0], masks[s][0]) for s in sorted(images) if s in masks and s not in bad]
    return samples, problems


def _suffix_hint(unmasked: list[str], orphans: list[str]) -> str:
    """'; masks are named <stem>_mask.*: ...' when most masks without an image are an image's stem
    plus one same ending (a naming convention of another tool), else ''."""
    stems = set(unmasked)
    endings: dict[str, int] = {}
    for m in orphans:
        for i in range(1, len(m)):
            if m[:i] in stems:
                endings[m[i:]] = endings.get(m[i:], 0) + 1
    if not endings:
        return ""
    ending, n = max(endings.items(), key=lambda kv: kv[1])
    if n < max(1, len(orphans) // 2):
        return ""
    return f"; they are named <image stem>{ending}: rename each to its image's stem (a.jpg pairs with a.png)"


def duplicate_stems(samples: list[Sample]) -> list[str]:
    """Stems that more than one sample carries (files of the same name in different folders)."""
    count: dict[str, int] = {}
    for s in samples:
        count[s.stem] = count.get(s.stem, 0) + 1
    return [s for s, n in count.items() if n > 1]
