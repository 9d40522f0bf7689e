"""The README's own-data commands run as written, and the user docs point at things that exist.

The commands of the README's "Your own data in three commands" block are run through
``pixelwise.cli.main`` in a folder holding a tiny ``DATA/`` and ``photos/``; only flags that make
training short are appended. Every relative link of README.md and docs/*.md must reach a file
(and a heading, when it names one), and every ``--flag`` a docs command line gives a ``pixelwise``
command must be one that command accepts.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TINY_MODEL, make_simple_dataset
from pixelwise.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
OWN_DATA_HEADING = "## Your own data in three commands"

# Appended to the README's `train` line only: a few seconds instead of 30 full epochs.
FAST_TRAIN = [
    "--epochs", "1", "--batch-size", "2", "--crop-size", "32", "--num-workers", "0",
    "--arch", TINY_MODEL["arch"], "--encoder", TINY_MODEL["encoder"],
    "--model-kwargs", "decoder_channels=" + str(TINY_MODEL["model_kwargs"]["decoder_channels"]).replace(" ", ""),
    "--quiet",
]  # fmt: skip


def fenced_blocks(text: str) -> list[tuple[str, str, str]]:
    """(language, body, the last heading above it) of every fenced code block in ``text``."""
    blocks, heading, lang, body = [], "", None, []
    for line in text.splitlines():
        if lang is None and line.startswith("#") and not line.startswith("#!"):
            heading = line.strip()
        elif line.startswith("```") and lang is None:
            lang, body = line[3:].strip(), []
        elif line.startswith("```"):
            blocks.append((lang, "\n".join(body), heading))
            lang = None
        elif lang is not None:
            body.append(line)
    return blocks


def own_data_commands() -> list[list[str]]:
    """The `pixelwise ...` argument lists of the first bash block under the own-data heading."""
    blocks = [b for lang, b, h in fenced_blocks(README.read_text()) if h == OWN_DATA_HEADING and lang == "bash"]
    assert blocks, f"no bash block under {OWN_DATA_HEADING!r}"
    lines = [shlex.split(line, comments=True) for line in blocks[0].splitlines()]
    return [words[1:] for words in lines if words and words[0] == "pixelwise"]


def test_readme_is_a_short_guide():
    assert len(README.read_text().splitlines()) <= 150


def test_readme_own_data_block_is_inspect_train_predict():
    assert [c[0] for c in own_data_commands()] == ["inspect", "train", "predict"]


def test_readme_own_data_commands_run_as_written(tmp_path, monkeypatch):
    make_simple_dataset(tmp_path / "DATA", n=6, size=(32, 40))
    (tmp_path / "photos").mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.jpg"):
        Image.fromarray(rng.integers(0, 255, (30, 44, 3), dtype=np.uint8)).save(tmp_path / "photos" / name)
    monkeypatch.chdir(tmp_path)
    for argv in own_data_commands():
        extra = FAST_TRAIN + _offline_flags() if argv[0] == "train" else []
        assert main(argv + extra) == 0, f"pixelwise {shlex.join(argv)} failed"
    run = _option(own_data_commands()[1], "--out")
    preds = _option(own_data_commands()[2], "--out", default="predictions")
    assert (tmp_path / run / "model.json").is_file()
    masks = sorted(p.stem for p in (tmp_path / preds / "masks").glob("*.png"))
    assert masks == ["a", "b"]
    with Image.open(tmp_path / preds / "masks" / "b.png") as mask:
        assert mask.size == (44, 30)
        assert mask.mode == "P"  # class indices that a viewer shows in the class colours


def _option(argv: list[str], flag: str, default: str | None = None) -> str:
    return argv[argv.index(flag) + 1] if flag in argv else default


def _offline_flags() -> list[str]:
    """No download in a test: train from random weights (`none` is a value of --pretrained)."""
    return ["--pretrained", "none"]


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _options_of(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def doc_command_lines() -> list[tuple[Path, list[str]]]:
    """(file, [command, words...]) of every `pixelwise COMMAND ...` line in a docs code block."""
    found = []
    for path in [README, *DOCS]:
        for lang, body, _ in fenced_blocks(path.read_text()):
            if lang != "bash":
                continue
            for line in body.replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True)
                if "pixelwise" in words:
                    rest = words[words.index("pixelwise") + 1 :]
                    if rest and not rest[0].startswith("-"):  # not `pixelwise --help`
                        found.append((path, rest))
    return found


def test_docs_command_lines_use_flags_the_commands_accept():
    commands = _subparsers()
    bad = []
    for path, words in doc_command_lines():
        assert words[0] in commands, f"{path.name}: unknown command `pixelwise {words[0]}`"
        known = _options_of(commands[words[0]])
        flags = [w.split("=")[0] for w in words if w.startswith("--")]
        bad += [f"{path.name}: pixelwise {words[0]} {f}" for f in flags if f not in known]
    assert bad == []
    assert len(doc_command_lines()) > 30  # the parser found the docs' commands


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to dashes."""
    text = heading.lstrip("#").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    headings, in_code = [], False
    for line in path.read_text().splitlines():
        in_code ^= line.startswith("```")
        if not in_code and line.startswith("#"):
            headings.append(line)
    return {slug(h) for h in headings}


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: p.name)
def test_relative_links_reach_files_and_headings(path):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
        if re.match(r"[a-z]+://", target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(target)
    assert broken == []


def test_slug_follows_github():
    assert (
        slug("## Metrics: what they mean and how they are computed")
        == "metrics-what-they-mean-and-how-they-are-computed"
    )
    assert slug("## Training step: encoder, batch, float32 vs bf16, NCHW vs channels_last") == (
        "training-step-encoder-batch-float32-vs-bf16-nchw-vs-channels_last"
    )


def python_blocks() -> list[tuple[Path, str]]:
    return [(p, body) for p in [README, *DOCS] for lang, body, _ in fenced_blocks(p.read_text()) if lang == "python"]


def test_docs_python_examples_parse_and_name_the_public_api():
    import importlib
    import importlib.util

    import pixelwise

    missing = []
    for path, body in python_blocks():
        compile(body, str(path), "exec")  # a syntax error fails here
        for name in set(re.findall(r"\bpixelwise\.(\w+)", body)):
            if not hasattr(pixelwise, name) and importlib.util.find_spec(f"pixelwise.{name}") is None:
                missing.append(f"{path.name}: pixelwise.{name}")
        for module, names in re.findall(r"^from (pixelwise[\w.]*) import ([\w, ]+)", body, re.M):
            imported = importlib.import_module(module)
            names = [n.strip() for n in names.split(",") if n.strip()]
            missing += [f"{path.name}: {module}.{n}" for n in names if not hasattr(imported, n)]
    assert missing == []
    assert len(python_blocks()) >= 5


# Flags of other programs that the docs mention: torchrun's and benchmarks/serve_load.py's.
OTHER_PROGRAMS_FLAGS = {
    "--standalone", "--nproc", "--nnodes", "--rdzv-backend", "--rdzv-endpoint", "--rdzv-id", "--max-restarts",
    "--clients", "--duration", "--run", "--url",
}  # fmt: skip


def test_every_flag_the_docs_mention_is_a_pixelwise_option():
    known = {s for parser in _subparsers().values() for s in _options_of(parser)} | OTHER_PROGRAMS_FLAGS
    unknown = sorted(
        f"{path.name}: {flag}"
        for path in [README, *DOCS]
        for flag in set(re.findall(r"--[a-z][a-z0-9-]*", path.read_text()))
        if flag not in known
    )
    assert unknown == []
