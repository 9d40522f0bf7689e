"""Three ways to get objects (instances) out of a segmentation toolkit, on the same synthetic scenes.

    python benchmarks/instances.py --minutes 10 --out /tmp/instances-bench
    python benchmarks/instances.py --only maskrcnn --minutes 1 --images 40 --size 128   # a quick try

The scenes come from ``pixelwise.data.synthetic_instances.make_instance_dataset``: discs and squares
(the thing classes) that touch and overlap in clusters, on a background with patches of grass (a
second stuff class). Training uses the ``train`` split of ``--images`` scenes (seed ``--seed``);
every method is scored on the same held-out scenes, written separately with seed ``--seed + 1``.

  semantic   ``pixelwise.train(task="semantic")`` for the given minutes, then objects from the labels:
             connected components of each thing class, touching objects split by a watershed
             (``InstanceOptions(method="components")``)
  instance   ``pixelwise.train(task="instance")`` for the same minutes: the same network with a centre
             heatmap and offsets, objects grouped by centres (``method="centres"``)
  maskrcnn   torchvision's Mask R-CNN with a ResNet-18 FPN backbone, trained by a small loop here on
             the same training images for the same minutes (boxes, masks and labels from the ids)

The two pixelwise runs use a U-Net on ResNet-18 with whole ``--size`` crops, batches of 8 and
``time_limit`` = the minutes (epochs are not the limit), pixelwise's defaults otherwise (loss,
optimiser, augmentation). Mask R-CNN uses SGD (learning rate 0.01 after a 100-step warm-up, momentum
0.9), batches of 4 and horizontal flips, at the images' own size (no resizing), anchors scaled to
the objects' sizes, 128 sampled regions per image and at most 50 detections (a scene holds at most
8 objects). Weights start from scratch unless ``--pretrained`` (ImageNet, when the weights are in
the local cache). "train min" is the wall time of the whole training call (pixelwise: reading the
data and the last validation included; Mask R-CNN: building the model included; both stop at the
first check of the clock past the minutes); "predict ms" is per image, grouping
into objects included, after one warm-up image. Torch uses ``--threads`` threads (default: every
core); on a machine whose cores are busy with other work, ``--threads 1`` is far faster, since
PyTorch's threads wait on each other.

Scores (pixelwise.instance_metrics): mask AP over the thing classes (COCOeval, from each method's
non-overlapping object map: Mask R-CNN's masks are painted lowest score first) and panoptic quality.
PQ/SQ/RQ are over the thing classes, the figure all three methods share; "PQ all" adds the stuff
classes (background, grass), on which Mask R-CNN, predicting no stuff, scores 0. Mask R-CNN's
panoptic map is its objects merged as pixelwise merges them (highest score first, an object keeping
under half its pixels dropped).

The figures and ratios are printed and written to OUT/instances.json; no verdict is drawn.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from pixelwise.instance_metrics import MaskAP, PanopticQuality
from pixelwise.instances import (
    GroupingConfig,
    InstanceMap,
    Segment,
    ground_truth_instances,
    ground_truth_panoptic,
    merge_panoptic,
)

METHODS = ("semantic", "instance", "maskrcnn")
IGNORE = 255


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="training time of each method (default 10)")
    p.add_argument("--images", type=int, default=200, help="scenes for training (train + val split, default 200)")
    p.add_argument("--test-images", type=int, default=0, help="held-out scenes (default: a quarter of --images)")
    p.add_argument("--size", type=int, default=128, help="scene side in pixels (default 128)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="/tmp/pixelwise-instances-bench", help="folder for data, runs and the JSON")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 (default cpu)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: every core)")
    p.add_argument("--only", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    p.add_argument("--pretrained", action="store_true", help="ImageNet backbone weights from the local cache")
    p.add_argument(
        "--reuse", action="store_true", help="score a pixelwise run already finished in OUT, untrained again"
    )
    args = p.parse_args(argv)
    args.only = [m.strip() for m in args.only.split(",") if m.strip()]
    unknown = sorted(set(args.only) - set(METHODS))
    if unknown:
        p.error(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    args.test_images = args.test_images or max(8, args.images // 4)
    return args


def make_data(out: Path, images: int, test_images: int, size: int, seed: int) -> tuple[Path, Path]:
    """Training and held-out scene folders under ``out`` (reused when already there)."""
    from pixelwise.data.synthetic_instances import make_instance_dataset

    train_root = out / f"data-{images}-{size}-{seed}"
    test_root = out / f"test-{test_images}-{size}-{seed + 1}"
    if not (train_root / "classes.yaml").exists():
        make_instance_dataset(train_root, num_images=images, size=size, seed=seed, val_fraction=0.2)
    if not (test_root / "classes.yaml").exists():
        make_instance_dataset(test_root, num_images=test_images, size=size, seed=seed + 1, val_fraction=0)
    return train_root, test_root


def read_scenes(root: Path, split: str | None = None) -> tuple[list[dict], list[str], list[int]]:
    """Scenes of a folder (all, or one split) as dicts of image (H, W, 3) uint8, mask and ids (H, W)
    int arrays and the stem; plus the class names and the thing class indices from classes.yaml."""
    meta = yaml.safe_load((root / "classes.yaml").read_text())
    names = list(meta["names"])
    things = sorted(names.index(t) if isinstance(t, str) else int(t) for t in meta["things"])
    if split is None:
        stems = sorted(p.stem for p in (root / "images").glob("*.png"))
    else:
        stems = (root / "splits" / f"{split}.txt").read_text().split()
    scenes = []
    for stem in stems:
        scenes.append(
            {
                "stem": stem,
                "image": np.array(Image.open(root / "images" / f"{stem}.png").convert("RGB")),
                "mask": np.asarray(Image.open(root / "masks" / f"{stem}.png"), dtype=np.int64),
                "ids": np.asarray(Image.open(root / "instances" / f"{stem}.png"), dtype=np.int64),
            }
        )
    return scenes, names, things


class Scores:
    """Mask AP and panoptic quality of one method over the held-out scenes."""

    def __init__(self, names: list[str], things: list[int]):
        self.things = things
        self.ap = MaskAP(things, names)
        self.pq = PanopticQuality(len(names), things, names)

    def add(self, scene: dict, objects: InstanceMap, panoptic) -> None:
        """Score one scene's objects and panoptic map against its ground truth."""
        gt = ground_truth_instances(scene["mask"], scene["ids"], self.things, IGNORE)
        gt_pan, void = ground_truth_panoptic(scene["mask"], scene["ids"], self.things, IGNORE)
        self.ap.add(gt.ids, gt.categories(), objects.ids, objects.categories(), objects.scores())
        self.pq.add(gt_pan.ids, gt_pan.categories(), panoptic.ids, panoptic.categories(), void=void)

    def row(self) -> dict:
        ap, pq = self.ap.summary(), self.pq.summary()
        return {
            "AP": ap["AP"],
            "AP50": ap["AP50"],
            "AP75": ap["AP75"],
            "PQ": pq["things"]["PQ"],
            "SQ": pq["things"]["SQ"],
            "RQ": pq["things"]["RQ"],
            "PQ all": pq["PQ"],
            "details": {"instances": ap, "panoptic": pq},
        }


def timed_predictions(predict, scenes: list[dict]) -> tuple[list, float]:
    """``predict(image)`` on every scene, and the mean milliseconds per image after one warm-up."""
    predict(scenes[0]["image"])
    results, spent = [], 0.0
    for scene in scenes:
        start = time.perf_counter()
        results.append(predict(scene["image"]))
        spent += time.perf_counter() - start
    return results, 1000 * spent / len(scenes)


# ---------------------------------------------------------------------------------------------
# pixelwise: semantic + components, instance model + centres


def run_pixelwise(task: str, train_root: Path, out: Path, args, test: list[dict], names, things) -> dict:
    """Train a pixelwise run of ``task`` for ``args.minutes`` and score its objects on ``test``."""
    import pixelwise
    from pixelwise.predict import InstanceOptions

    run = out / f"run-{task}-{args.size}-{args.seed}-{args.minutes:g}m"
    train_s, epochs = finished_run(run) if args.reuse else (None, None)
    if train_s is None:
        train_s, epochs = train_pixelwise(task, train_root, run, args)
    method = "components" if task == "semantic" else "centres"
    thing_names = tuple(names[t] for t in things)
    options = InstanceOptions(method=method, things=thing_names)
    predictor = pixelwise.load_predictor(run, device=args.device, instances=options)
    results, ms = timed_predictions(predictor.run_objects, test)
    scores = Scores(names, things)
    for scene, found in zip(test, results):
        scores.add(scene, found.instances, found.panoptic)
    row = {"method": f"{task} ({method})", "train min": train_s / 60, "predict ms": ms, **scores.row()}
    row["details"]["epochs"] = epochs
    return row


def train_pixelwise(task: str, train_root: Path, run: Path, args) -> tuple[float, int]:
    """Train ``run`` for ``args.minutes``; the wall seconds of the whole call and the epochs done."""
    import pixelwise

    start = time.perf_counter()
    result = pixelwise.train(
        data=str(train_root),
        out=str(run),
        overwrite=True,
        task=task,
        arch="unet",
        encoder="resnet18",
        pretrained="auto" if args.pretrained else "none",
        epochs=100000,  # the clock stops training, not the epochs
        time_limit=args.minutes * 60,
        validations=1,
        crop_size=args.size,
        batch_size=8,
        num_workers=0,
        seed=args.seed,
        device=args.device,
        progress=False,
    )
    return time.perf_counter() - start, len(result.history)


def finished_run(run: Path) -> tuple[float | None, int | None]:
    """With ``--reuse``: a finished run's training seconds (its log's "s since the start") and epochs."""
    log = run / "train.log"
    if not (run / "model.json").is_file() or not log.is_file():
        return None, None
    found = re.search(r"; (\d+) s since the start", log.read_text())
    if not found:
        return None, None
    rows = (run / "metrics.csv").read_text().splitlines()[1:]
    print(f"reusing the finished run {run} (trained {found.group(1)} s)", flush=True)
    return float(found.group(1)), len(rows)


# ---------------------------------------------------------------------------------------------
# torchvision Mask R-CNN, ResNet-18 FPN


def imagenet_resnet18():
    """ResNet-18 ImageNet weights when their file is in torch's local cache, else None (and a note)."""
    from torchvision.models import ResNet18_Weights

    weights = ResNet18_Weights.IMAGENET1K_V1
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if cached.exists():
        return weights
    print(f"note: {cached} is not there; Mask R-CNN's backbone starts from scratch")
    return None


def build_maskrcnn(num_things: int, size: int, pretrained: bool):
    """Mask R-CNN (ResNet-18 FPN) for ``num_things`` classes plus background at ``size`` px images."""
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    weights = imagenet_resnet18() if pretrained else None
    # From scratch, frozen batch norm (torchvision's default for fine-tuning) would normalise nothing.
    norm = torch.nn.BatchNorm2d if weights is None else None
    kwargs = {"norm_layer": norm} if norm else {}
    backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=weights, trainable_layers=5, **kwargs)
    # COCO's anchors (32..512 px) are for 800-px images; the scenes' objects are about 15-40 px
    # across at 128 px, so the anchors scale with the image (8..128 px at 128).
    scale = size / 128
    sizes = tuple((max(4, round(s * scale)),) for s in (8, 16, 32, 64, 128))
    anchors = AnchorGenerator(sizes=sizes, aspect_ratios=((0.5, 1.0, 2.0),) * len(sizes))
    return MaskRCNN(
        backbone,
        num_classes=num_things + 1,
        min_size=size,
        max_size=size,  # the images' own size: no resizing
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=1000,
        rpn_post_nms_top_n_train=500,
        rpn_pre_nms_top_n_test=500,
        rpn_post_nms_top_n_test=300,
        # A scene holds at most 8 objects: fewer sampled regions and detections than COCO's 512 and
        # 100 keep the mask head (four 256-channel convolutions per region) affordable on a CPU.
        rpn_batch_size_per_image=128,
        box_batch_size_per_image=128,
        box_detections_per_img=50,
    )


def maskrcnn_target(scene: dict, things: list[int]) -> tuple[torch.Tensor, dict]:
    """(3, H, W) float image in [0, 1] and its target: boxes (x0, y0, x1, y1), labels 1..K, masks."""
    gt = ground_truth_instances(scene["mask"], scene["ids"], things, IGNORE)
    boxes, labels, masks = [], [], []
    for seg in gt.segments:
        x, y, w, h = seg.bbox
        if w < 1 or h < 1:
            continue
        boxes.append([x, y, x + w, y + h])
        labels.append(things.index(seg.category) + 1)
        masks.append(gt.ids == seg.id)
    h, w = scene["mask"].shape
    target = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "masks": torch.from_numpy(np.stack(masks) if masks else np.zeros((0, h, w), bool)).to(torch.uint8),
    }
    image = torch.from_numpy(scene["image"]).permute(2, 0, 1).float() / 255
    return image, target


def flipped(image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
    """The horizontal mirror of an image and its target."""
    width = image.shape[-1]
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
    return image.flip(-1), {**target, "boxes": boxes, "masks": target["masks"].flip(-1)}


def train_maskrcnn(model, samples: list, seconds: float, device: str, seed: int, batch: int = 4) -> int:
    """SGD on random batches of ``samples`` (image, target) with random flips until ``seconds`` pass;
    returns the steps taken. Learning rate 0.01 after a 100-step linear warm-up."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    # The number of sampled regions, hence the heads' input shapes, changes every step: cuDNN's
    # benchmark mode (which a pixelwise run before this one turns on) would re-tune every step.
    torch.backends.cudnn.benchmark = False
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)
    start, step = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        images, targets = [], []
        for i in rng.choice(len(samples), size=min(batch, len(samples)), replace=False):
            image, target = samples[i] if rng.random() < 0.5 else flipped(*samples[i])
            images.append(image.to(device))
            targets.append({k: v.to(device) for k, v in target.items()})
        for group in optimiser.param_groups:
            group["lr"] = 0.01 * min(1.0, (step + 1) / 100)
        losses = model(images, targets)
        loss = sum(losses.values())
        optimiser.zero_grad()
        if torch.isfinite(loss):
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            optimiser.step()
        step += 1
        if step % 10 == 0:
            print(
                f"  maskrcnn step {step}  {time.perf_counter() - start:5.0f}s  loss {float(loss.detach()):.3f}",
                flush=True,
            )
    return step


def maskrcnn_objects(model, image: np.ndarray, things: list[int], device: str) -> InstanceMap:
    """Mask R-CNN's detections of one image as a non-overlapping object map: masks (probability
    >= 0.5) painted lowest score first; each segment keeps its full mask area (for the panoptic merge)."""
    tensor = torch.from_numpy(image).permute(2, 0, 1).float().div(255).to(device)
    with torch.no_grad():
        out = model([tensor])[0]
    masks = (out["masks"][:, 0] >= 0.5).cpu().numpy()
    scores, labels = out["scores"].cpu().numpy(), out["labels"].cpu().numpy()
    ids = np.zeros(image.shape[:2], np.int32)
    segments = []
    for k in np.argsort(scores, kind="stable"):
        if masks[k].any():
            seg_id = len(segments) + 1
            ids[masks[k]] = seg_id
            category = things[int(labels[k]) - 1]
            segments.append(Segment(seg_id, category, float(scores[k]), int(masks[k].sum())))
    shown = set(np.unique(ids).tolist())
    return InstanceMap(ids, [s for s in segments if s.id in shown])


def run_maskrcnn(train_root: Path, args, test: list[dict], names, things) -> dict:
    """Train Mask R-CNN on the training split for ``args.minutes`` and score it on ``test``."""
    train, _, _ = read_scenes(train_root, "train")
    samples = [maskrcnn_target(scene, things) for scene in train]
    start = time.perf_counter()
    model = build_maskrcnn(len(things), args.size, args.pretrained)
    steps = train_maskrcnn(model, samples, args.minutes * 60, args.device, args.seed)
    train_s = time.perf_counter() - start
    model.eval()
    results, ms = timed_predictions(lambda image: maskrcnn_objects(model, image, things, args.device), test)
    scores = Scores(names, things)
    # No stuff from Mask R-CNN: free pixels are void (labels all IGNORE), objects merged by score.
    for scene, objects in zip(test, results):
        panoptic = merge_panoptic(np.full(objects.ids.shape, IGNORE), objects, things, GroupingConfig(), IGNORE)
        scores.add(scene, objects, panoptic)
    row = {"method": "maskrcnn (resnet18 fpn)", "train min": train_s / 60, "predict ms": ms, **scores.row()}
    row["details"]["steps"] = steps
    return row


# ---------------------------------------------------------------------------------------------


def print_table(rows: list[dict]) -> None:
    """The table, and each method's ratios to the first row's figures."""
    columns = ["train min", "predict ms", "AP", "AP50", "AP75", "PQ", "SQ", "RQ", "PQ all"]

    def cell(value) -> str:
        return "-" if value is None else f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"

    print(f"{'method':<26}" + "".join(f"{c:>11}" for c in columns))
    for row in rows:
        print(f"{row['method']:<26}" + "".join(f"{cell(row[c]):>11}" for c in columns))
    print("(AP over IoU .50:.95; PQ/SQ/RQ over the thing classes; PQ all: every class)")
    base = rows[0]
    for row in rows[1:]:
        ratios = [f"{c} {row[c] / base[c]:.2f}x" for c in ("predict ms", "AP", "PQ") if row[c] is not None and base[c]]
        print(f"{row['method']} / {base['method']}: " + ", ".join(ratios))


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_root, test_root = make_data(out, args.images, args.test_images, args.size, args.seed)
    test, names, things = read_scenes(test_root)
    print(
        f"{len(test)} held-out scenes, {args.size} px; things: {[names[t] for t in things]}; "
        f"{args.minutes:g} min of training each; {args.threads} threads on {args.device}"
    )
    rows = []
    for method in args.only:
        print(f"-- {method}", flush=True)
        if method == "maskrcnn":
            rows.append(run_maskrcnn(train_root, args, test, names, things))
        else:
            rows.append(run_pixelwise(method, train_root, out, args, test, names, things))
    print_table(rows)
    report = {"config": vars(args), "rows": rows}
    (out / "instances.json").write_text(json.dumps(report, indent=2))
    print(f"written: {out / 'instances.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
