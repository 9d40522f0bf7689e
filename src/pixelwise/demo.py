"""`pixelwise demo`: the whole flow on built-in synthetic data, in a few minutes on a CPU.

Generates the procedural shapes data set (textured shapes on varied backgrounds), trains the
demo model, evaluates it on the held-out images, writes predicted masks and overlays for them,
and prints where everything is. With ``task="instance"`` or ``"panoptic"`` the data are scenes of
touching and overlapping objects (data/synthetic_instances.py) and the model also finds each
object: the evaluation adds mask AP and panoptic quality, the predictions add object ids.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

# A small U-Net that trains to a useful model on 2 CPU cores in a few minutes. The encoder is
# timm's resnet10t (one residual block per stage, deep stem): on a 2-core CPU without native bf16
# it trains about 1.3x as many images per second as resnet18 and reaches a better model in the
# same time. Batches of 16 and channels-last memory make better use of the CPU cores than
# batches of 8 in NCHW; validation every 5 epochs (and at the end) leaves the time to training.
DEMO_IMAGES = 300
# Bounds of the demo's numbers: at least 2 images (one to train on, one held out), seeds that
# NumPy and PyTorch both take.
MAX_IMAGES = 100_000
MAX_EPOCHS = 10_000
MAX_SEED = 2**32 - 1
DEMO_TRAIN = dict(
    arch="unet",
    encoder="tu-resnet10t",
    model_kwargs={"decoder_channels": [128, 64, 32, 16, 8]},
    epochs=20,
    batch_size=16,
    lr=3e-3,
    crop_size=128,
    scale_range=(0.75, 1.25),
    loss="ce+dice",
    val_fraction=0.2,
    val_every=5,
    channels_last=True,
    # Random initialisation: the demo stays offline and its figures do not depend on a download.
    pretrained="none",
    # Training stops after `epochs` or on this clock, whichever comes first (the learning rate
    # still decays to zero by then), so a slow CPU does not stretch the demo past 5 minutes.
    # An explicit --epochs drops the clock.
    time_limit=240.0,
)
DEMO_TASKS = ("semantic", "instance", "panoptic")
# The object demo (--task instance|panoptic) keeps the semantic demo's budget: 300 images, 240 s
# of training on 2 CPU cores. Its scenes are 128x128 and trained whole (crop 128), so a step costs
# what a semantic demo step on a 128 crop costs, and the clock again ends training after about 15
# epochs on 2 cores: by then the centres separate touching objects of one class (mask AP50 well above
# half on the held-out scenes), while a faster machine runs all 30. Objects of 9 to 18 px radius
# (250 to 1000 pixels) are far above the grouping's 16-pixel minimum, and the default centre
# Gaussian (8 px) fits them.
# The last decoder stage is wider (16 channels, not 8): the centre heatmap and the two offset maps
# are three more outputs to regress from it.
INSTANCE_IMAGES = 300
INSTANCE_SIZE = 128
DEMO_INSTANCE_TRAIN = dict(
    DEMO_TRAIN,
    model_kwargs={"decoder_channels": [128, 64, 32, 16, 16]},
    crop_size=INSTANCE_SIZE,
    epochs=30,
)


def run_demo(
    out: str = "",
    num_images: int | None = None,
    epochs: int | None = None,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    task: str = "semantic",
) -> dict:
    """Run the demo end to end; returns {"run": path, "metrics": held-out metrics dict}.

    ``task`` "semantic" (the shapes data set, class masks), "instance" or "panoptic" (the
    touching-objects data set, a model that also finds each object). ``out`` must be a new or
    empty folder. Every argument is checked before any work: a bad one raises a one-line
    :class:`~pixelwise.errors.PixelwiseError`. The metrics hold fractions in [0, 1]; the printout
    shows them as percentages (``mIoU 89.40 %``); with objects, ``metrics["instances"]`` and
    ``metrics["panoptic"]`` hold mask AP and PQ.
    """
    # Imported here so that reading DEMO_TRAIN (for `pixelwise demo --help`) imports no torch.
    from .evaluation import evaluate, latency_line, object_lines
    from .metrics import format_metrics_table
    from .predict import load, predict_files
    from .training.config import TrainConfig
    from .training.trainer import train

    run = Path(out) if out else Path("runs") / f"demo-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    objects = task != "semantic"
    num_images = (INSTANCE_IMAGES if objects else DEMO_IMAGES) if num_images is None else num_images
    check_demo_arguments(run, num_images, epochs, seed, device, task)
    data = run / "data"
    _make_data(data, task, num_images, seed, progress)
    cfg = demo_train_options(task, epochs)
    limit = f" or {cfg['time_limit']:.0f} s, whichever comes first" if cfg["time_limit"] else ""
    epochs_text = "1 epoch" if cfg["epochs"] == 1 else f"{cfg['epochs']} epochs"
    what = f", task {task}" if objects else ""
    print(f"[2/4] training {cfg['arch']}/{cfg['encoder']} for {epochs_text}{limit}{what}")
    # The run folder holds the demo's data/ beside the run; it was new or empty when the demo began.
    config = TrainConfig(data=str(data), out=str(run), seed=seed, device=device, **cfg)
    result = train(config, overwrite=True, progress=progress)
    print("[3/4] evaluating on the held-out (val) images at full resolution")
    seg = load(run, device)
    metrics = evaluate(run, data, split="val", predictor=seg, progress=progress)
    print(format_metrics_table(metrics))
    for line in [*object_lines(metrics), latency_line(metrics)]:
        if line:
            print(line)
    print(f"[4/4] writing predicted {'objects' if objects else 'masks'} and overlays for the held-out images")
    val_images = [data / "images" / f"{s}.png" for s in (data / "splits" / "val.txt").read_text().split()]
    predict_files(seg, val_images, run / "predictions", progress=progress)
    print()
    print(f"held-out mIoU {100 * metrics['miou']:.2f} %  (best epoch {result.best_epoch} of {len(result.history)})")
    _print_paths(run, task)
    return {"run": str(run), "metrics": metrics}


def _make_data(data: Path, task: str, num_images: int, seed: int, progress: bool) -> None:
    if task == "semantic":
        from .data.synthetic import make_demo_dataset

        print(f"[1/4] generating {num_images} synthetic 256x256 images into {data}")
        make_demo_dataset(data, num_images=num_images, seed=seed, progress=progress)
        return
    from .data.synthetic_instances import make_instance_dataset

    print(
        f"[1/4] generating {num_images} synthetic {INSTANCE_SIZE}x{INSTANCE_SIZE} scenes of touching objects into {data}"
    )
    make_instance_dataset(data, num_images=num_images, size=INSTANCE_SIZE, seed=seed, progress=progress)


def demo_train_options(task: str, epochs: int | None) -> dict:
    """The TrainConfig keyword arguments of the demo for ``task``; an explicit ``epochs`` drops the clock."""
    cfg = dict(DEMO_TRAIN) if task == "semantic" else dict(DEMO_INSTANCE_TRAIN, task=task)
    if epochs:
        cfg["epochs"] = epochs
        cfg["time_limit"] = 0.0
    return cfg


def _print_paths(run: Path, task: str) -> None:
    ev, pred = run / "eval-val", run / "predictions"
    print(f"  metrics:     {ev / 'metrics.json'} (fractions in [0, 1])  {ev / 'confusion.png'}")
    print(f"  examples:    {ev / 'worst.png'}  {ev / 'best.png'}  {ev / 'per_class_iou.png'}")
    print(f"  curves:      {run / 'curves.png'}  {run / 'metrics.csv'}")
    if task == "semantic":
        print(f"  predictions: {pred}/masks, /overlays")
    else:
        print(f"  objects:     {pred}/overlays (one colour per object), /instances (16-bit ids + JSON)")
        if task == "panoptic":
            print(f"  panoptic:    {pred}/panoptic (COCO panoptic PNG + JSON)")
    print(f"  model:       {run / 'model.safetensors'} + model.json")
    print(f"run directory: {run}")


def check_demo_arguments(
    run: Path, num_images: int, epochs: int | None, seed: int, device: str, task: str = "semantic"
) -> None:
    """Refuse, with one line, a demo that could not finish: numbers out of range, an unknown or absent
    device, or an output folder that is not new or empty or cannot be written. Writes nothing."""
    from .devices import resolve_device
    from .errors import PixelwiseError
    from .fileio import prepare_output_dir

    if task not in DEMO_TASKS:
        raise PixelwiseError(f"--task {task!r}: expected one of {', '.join(DEMO_TASKS)}")
    for flag, value, lo, hi in (
        ("--images", num_images, 2, MAX_IMAGES),
        ("--epochs", epochs, 1, MAX_EPOCHS),
        ("--seed", seed, 0, MAX_SEED),
    ):
        if value is None and flag == "--epochs":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise PixelwiseError(f"{flag} {value!r}: expected a whole number from {lo} to {hi}")
    resolve_device(device)
    prepare_output_dir(run, "--out", create=False)
    if run.is_dir() and any(run.iterdir()):
        raise PixelwiseError(f"--out {run}: not empty; the demo writes a new run, so choose a new or empty folder")
