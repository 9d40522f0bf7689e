"""Command-line flags: train's generated from TrainConfig, --config FILE, renamed flags, checks, fast --help."""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
from dataclasses import fields

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pixelwise.cli import build_parser, main, parse_args
from pixelwise.cli.config_flags import GROUP_TITLES, cli_fields, default_text
from pixelwise.cli.data_flags import add_data_flags
from pixelwise.cli.train import config_from_args
from pixelwise.errors import PixelwiseError
from pixelwise.training.config import (
    ARCH_NAMES,
    FORMAT_NAMES,
    LOSS_NAMES,
    TrainConfig,
    flag_name,
    load_config_file,
)


def _train_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


def _config(*argv: str) -> TrainConfig:
    return config_from_args(parse_args(build_parser(), ["train", *argv]))


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def _one_line_error(capsys, argv, *expected):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("pixelwise: error: ") and "\n" not in err and "Traceback" not in err
    for text in expected:
        assert text in err
    return err


def test_every_config_field_is_a_flag_named_as_its_keyword():
    parser = _train_parser()
    visible = [a for a in parser._actions if a.help != argparse.SUPPRESS]
    # The first action of each destination is the field's own flag (--no-pretrained comes after it).
    by_dest: dict = {}
    for a in visible:
        by_dest.setdefault(a.dest, a)
    expected = {f.name for f in fields(TrainConfig) if f.metadata.get("cli", True)}
    assert expected == {f.name for f in cli_fields()}
    assert expected - set(by_dest) == set()
    assert set(by_dest) - expected == {"help", "config", "resume", "overwrite", "quiet"}
    assert "keep" not in by_dest  # cli: False
    for name in expected - {"data"}:
        assert flag_name(name) in by_dest[name].option_strings
        assert fields_by_name()[name].metadata["group"] in GROUP_TITLES
    assert by_dest["data"].option_strings == []  # DATA is positional


def fields_by_name():
    return {f.name: f for f in fields(TrainConfig)}


def _option_blocks(help_text: str) -> dict[str, str]:
    """Option string -> its help entry, whitespace collapsed."""
    blocks, current = {}, None
    for line in help_text.splitlines():
        m = re.match(r"  (-\S+)", line)
        if m:
            current = m.group(1).rstrip(",")
            blocks[current] = line
        elif current and line.startswith("   "):
            blocks[current] += " " + line
        else:
            current = None
    return {k: " ".join(v.split()) for k, v in blocks.items()}


def test_every_default_shows_in_train_help(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping inside words such as --val-every
    blocks = _option_blocks(_help(capsys, "train"))
    for f in cli_fields():
        if f.metadata.get("positional"):
            continue
        assert f"(default: {default_text(f)})" in blocks[flag_name(f.name)], f.name
    assert "(default: 30)" in blocks["--epochs"]
    assert "(default: 100,000,000)" in blocks["--max-image-pixels"]
    assert "(default: 0.5,2.0)" in blocks["--scale-range"]
    assert blocks["--hflip"].startswith("--hflip, --no-hflip") and "(default: on)" in blocks["--hflip"]
    assert "(default: off)" in blocks["--vflip"]


def test_parsed_defaults_are_the_config_defaults():
    assert _config("DATA") == TrainConfig(data="DATA")


def test_flags_set_the_keywords_of_the_same_name():
    config = _config(
        "DATA",
        "--num-workers",
        "0",
        "--classes-file",
        "c.yaml",
        "--model-kwargs",
        "decoder_channels=[16,8]",
        "--model-kwargs",
        "upsampling=2",
        "--max-image-pixels",
        "1000",
        "--scale-range",
        "1,1.5",
        "--no-hflip",
        "--vflip",
        "--no-amp",
        "--channels-last",
        "--pretrained",
        "--class-weights",
        "--time-limit",
        "60",
        "--skip-bad",
    )
    assert config == TrainConfig(
        data="DATA",
        num_workers=0,
        classes_file="c.yaml",
        model_kwargs={"decoder_channels": [16, 8], "upsampling": 2},
        max_image_pixels=1000,
        scale_range=(1.0, 1.5),
        hflip=False,
        vflip=True,
        amp=False,
        channels_last=True,
        pretrained="imagenet",
        class_weights="auto",
        time_limit=60.0,
        skip_bad=True,
    )
    assert _config("D", "--pretrained", "w.safetensors", "--class-weights", "sqrt").pretrained == "w.safetensors"
    assert _config("D", "--no-channels-last").channels_last is False


def test_renamed_flags_in_help_and_old_spellings_still_accepted(capsys):
    text = _help(capsys, "train")
    for new in ("--num-workers", "--classes-file", "--model-kwargs", "--max-image-pixels"):
        assert new in text
    for old in ("--workers", "--classes ", "--model-arg", "--max-pixels"):
        assert old not in text
    config = _config("D", "--workers", "3", "--classes", "c.yaml", "--model-arg", "a=1", "--max-pixels", "99")
    assert (config.num_workers, config.classes_file, config.model_kwargs, config.max_image_pixels) == (
        3,
        "c.yaml",
        {"a": 1},
        99,
    )
    err = capsys.readouterr().err
    assert "--workers is now called --num-workers" in err and "--max-pixels is now called --max-image-pixels" in err
    text = _help(capsys, "inspect")
    assert "--read-threads" in text and "--max-image-pixels" in text and "--workers" not in text
    args = parse_args(build_parser(), ["inspect", "D", "--workers", "2", "--max-pixels", "7"])
    assert (args.read_threads, args.max_image_pixels) == (2, 7)


def test_data_flags_default_to_the_trained_options_or_to_the_config():
    as_trained = argparse.ArgumentParser()
    add_data_flags(as_trained)
    args = as_trained.parse_args([])
    assert (args.format, args.encoding, args.skip_bad, args.max_image_pixels) == (None, None, None, None)
    assert "as the model was trained" in as_trained.format_help()
    assert as_trained.parse_args(["--no-skip-bad", "--classes-file", "c.yaml"]).skip_bad is False
    from_config = argparse.ArgumentParser()
    add_data_flags(from_config, TrainConfig())
    args = from_config.parse_args([])
    assert (args.format, args.encoding, args.skip_bad) == ("auto", "auto", False)
    assert args.max_image_pixels == TrainConfig().max_image_pixels


def _write_config(path, **values):
    path.write_text(yaml.safe_dump(TrainConfig(**values).to_dict()))
    return path


def test_config_file_starts_a_run_and_flags_win(tmp_path):
    config = _write_config(tmp_path / "config.yaml", data="D", epochs=5, lr=0.01, hflip=False, scale_range=(1, 2))
    got = _config("--config", str(config), "--epochs", "7")
    assert got == TrainConfig(data="D", epochs=7, lr=0.01, hflip=False, scale_range=(1.0, 2.0))
    assert _config("OTHER", "--config", str(config), "--hflip").data == "OTHER"
    assert _config("OTHER", "--config", str(config), "--hflip").hflip is True


def test_config_file_of_an_earlier_version_loads(tmp_path):
    saved = TrainConfig(max_image_pixels=1234).to_dict()
    saved["max_pixels"] = saved.pop("max_image_pixels")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    assert _config("--config", str(tmp_path / "config.yaml")).max_image_pixels == 1234
    assert TrainConfig.from_dict(saved).max_image_pixels == 1234


@pytest.mark.parametrize(
    "text, expected",
    [
        ("epochs: 3\nwat: 1\nlearning_rate: 2\n", "unknown training options: learning_rate, wat"),
        ("epochs: 2.5\n", "epochs must be a whole number"),
        ("epochs: true\n", "epochs must be a whole number"),
        ("lr: fast\n", "lr must be a number"),
        ("hflip: 1\n", "hflip must be true or false"),
        ("scale_range: [1]\n", "scale_range must be a list of 2 numbers"),
        ("model_kwargs: [1, 2]\n", "model_kwargs must be a mapping"),
        ("epochs: null\n", "epochs must have a value"),
        ("- epochs\n", "a mapping"),
        ("lr: [1\n", "cannot read the config file"),
        ("lr: -1\n", "--lr -1"),
    ],
)
def test_bad_config_file_is_one_line_naming_the_file(tmp_path, capsys, text, expected):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    _one_line_error(capsys, ["train", "D", "--config", str(path)], str(path), expected)


def test_missing_config_file(tmp_path, capsys):
    _one_line_error(capsys, ["train", "--config", str(tmp_path / "nope.yaml")], "nope.yaml", "not found")


def test_a_flag_overrides_a_bad_value_of_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: -1\n")
    assert _config("D", "--config", str(path), "--lr", "0.1").lr == 0.1


numbers = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False)


@settings(max_examples=40, deadline=None)
@given(
    epochs=st.integers(1, 10_000),
    lr=numbers,
    hflip=st.booleans(),
    lo=numbers,
    stretch=st.floats(1, 4),
    pretrained=st.one_of(st.none(), st.text(min_size=1, max_size=20)),
    kwargs=st.dictionaries(st.text(min_size=1, max_size=8), st.integers() | st.lists(st.integers(), max_size=4)),
)
def test_config_file_round_trip(tmp_path_factory, epochs, lr, hflip, lo, stretch, pretrained, kwargs):
    config = TrainConfig(
        epochs=epochs,
        lr=lr,
        hflip=hflip,
        scale_range=(lo, lo * stretch),
        pretrained=pretrained,
        model_kwargs=kwargs,
    )
    path = tmp_path_factory.mktemp("cfg") / "config.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    assert TrainConfig(**load_config_file(path)) == config


@pytest.mark.parametrize(
    "values, flag",
    [
        (dict(lr=0.0), "--lr"),
        (dict(lr=math.nan), "--lr"),
        (dict(lr=math.inf), "--lr"),
        (dict(weight_decay=-1e-4), "--weight-decay"),
        (dict(dropout=1.0), "--dropout"),
        (dict(color_jitter=-0.1), "--color-jitter"),
        (dict(grad_clip=-1.0), "--grad-clip"),
        (dict(class_crops=1.5), "--class-crops"),
        (dict(ema=1.0), "--ema"),
        (dict(epochs=0), "--epochs"),
        (dict(batch_size=0), "--batch-size"),
        (dict(crop_size=4), "--crop-size"),
        (dict(val_every=0), "--val-every"),
        (dict(warmup_epochs=-1.0), "--warmup-epochs"),
        (dict(val_fraction=1.0), "--val-fraction"),
        (dict(test_fraction=-0.1), "--test-fraction"),
        (dict(val_fraction=0.5, test_fraction=0.5), "--val-fraction"),
        (dict(scale_range=(2.0, 1.0)), "--scale-range"),
        (dict(num_workers=-2), "--num-workers"),
        (dict(max_image_pixels=0), "--max-image-pixels"),
        (dict(schedule="step"), "--schedule"),
        (dict(encoding="jpeg"), "--encoding"),
        (dict(time_limit=-1.0), "--time-limit"),
        (dict(max_side=8), "--max-side"),
        (dict(max_side=-1), "--max-side"),
        (dict(max_side=20000), "--max-side"),
        (dict(max_latency=40.0), "--max-latency"),
        (dict(max_latency=-1.0, budget=600.0), "--max-latency"),
        (dict(boundary_weight=-1.0), "--boundary-weight"),
        (dict(boundary_weight=2.0, loss="dice"), "--boundary-weight"),
        (dict(boundary_weight=2.0, loss="lovasz"), "--boundary-weight"),
    ],
)
def test_validate_names_the_flag_in_one_line(values, flag):
    with pytest.raises(PixelwiseError) as e:
        TrainConfig(**values).validate()
    message = str(e.value)
    assert message.startswith(flag + " ") and "\n" not in message


def test_validate_accepts_the_defaults_and_unregistered_names():
    TrainConfig().validate()
    # A Python user may register an architecture; the model builder checks names, not validate().
    TrainConfig(arch="my-net", loss="my-loss", format="my-format").validate()


def test_out_of_range_value_on_the_command_line_is_one_line(capsys):
    _one_line_error(capsys, ["train", "D", "--lr", "0"], "--lr 0")
    _one_line_error(capsys, ["train", "D", "--val-fraction", "0.6", "--test-fraction", "0.5"], "--val-fraction")


def test_budget_keeps_the_options_given(tmp_path):
    assert _config("D", "--budget", "20m", "--crop-size", "64", "--num-workers", "0", "--no-hflip").keep == [
        "crop_size",
        "hflip",
    ]
    assert _config("D", "--budget", "20m").keep == []
    assert _config("D", "--crop-size", "64").keep == []  # no budget, nothing to keep
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps({"budget": 600, "keep": ["arch"], "epochs": 3}))  # JSON is YAML too
    assert _config("D", "--config", str(path), "--loss", "dice").keep == ["arch", "loss"]


def test_unknown_flag_or_bad_value_shows_the_subcommand_usage(capsys):
    for argv, message in (
        (["train", "D", "--bogus"], "unrecognized arguments: --bogus"),
        (["train", "D", "--epochs", "zero"], "expected a whole number"),
        (["train", "D", "--arch", "segnet"], "invalid choice"),
        (["inspect", "D", "--read-threads", "0"], "must be at least 1"),
        (["train", "D", "--model-kwargs", "novalue"], "expected KEY=VALUE"),
        (["train", "D", "--scale-range", "2,1"], "expected 0 < low <= high"),
    ):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2
        assert f"usage: pixelwise {argv[0]}" in err and message in err, (argv, err)


def test_light_name_lists_match_the_registries():
    from pixelwise.data.formats import FORMATS
    from pixelwise.losses import LOSSES
    from pixelwise.models import MODELS

    assert ARCH_NAMES == tuple(MODELS)
    assert LOSS_NAMES == tuple(LOSSES)
    assert FORMAT_NAMES == ("auto", *FORMATS)


HEAVY = (
    "torch",
    "pixelwise.training.trainer",
    "pixelwise.models",
    "pixelwise.losses",
    "pixelwise.predict",
    "pixelwise.serve",
    "pixelwise.evaluation",
)


@pytest.mark.parametrize("argv", [["--version"], ["--help"]])
def test_version_and_help_import_no_torch(argv):
    code = (
        "import sys\n"
        "from pixelwise.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print('LOADED', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert "LOADED []" in out, out
    assert ("pixelwise " in out) if argv == ["--version"] else ("train" in out and "serve" in out)


def test_export_command_choices_match_the_exporter():
    from pixelwise.cli import export as command
    from pixelwise.export import DEFAULT_TOLERANCE, FORMATS

    assert command.EXPORT_FORMATS == tuple(FORMATS)
    assert command.DEFAULT_TOLERANCE == DEFAULT_TOLERANCE


def test_no_pretrained_is_pretrained_none_and_counts_as_given():
    from pixelwise.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["train", "DATA", "--no-pretrained"]).pretrained == "none"
    assert parser.parse_args(["train", "DATA", "--pretrained"]).pretrained == "imagenet"
    assert not hasattr(parser.parse_args(["train", "DATA"]), "pretrained")  # the default: not given


@pytest.mark.parametrize("text, ms", [("40", 40.0), ("40ms", 40.0), ("0.04s", 40.0), ("12.5 ms", 12.5)])
def test_max_latency_reads_milliseconds_or_seconds(text, ms):
    assert _config("D", "--budget", "20m", "--max-latency", text).max_latency == pytest.approx(ms)


def test_max_latency_refuses_other_units(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "D", "--budget", "20m", "--max-latency", "40min"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--max-latency" in err and "expected a time like 40ms" in err
