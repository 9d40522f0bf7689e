"""TrainConfig: every choice of a training run, with its default, its check and its help text.

The ``pixelwise train`` flags are generated from these fields, so names, defaults and help
match the Python keywords of :func:`pixelwise.train`. ``config.yaml`` in a run directory is this
dataclass serialised; ``--config FILE`` starts a run from one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..data.encodings import DEFAULT_MAX_PIXELS
from ..errors import PixelwiseError


@dataclass
class TrainConfig:
    """Every choice of a training run. Defaults work; each is a ``pixelwise train`` flag."""

    data: str = ""
    out: str = ""  # run directory; empty = runs/<date-time>
    arch: str = "unet"
    encoder: str = "resnet18"
    model_kwargs: dict = field(default_factory=dict)  # e.g. {"decoder_channels": [128, 64, 32, 16, 8]}
    dropout: float = 0.0
    pretrained: str | None = None  # None, "imagenet" or a path to .safetensors weights
    epochs: int = 30
    batch_size: int = 8  # the global batch: all processes together under torchrun
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # cosine | poly | constant, after a linear warm-up
    warmup_epochs: float = 1.0
    crop_size: int = 256
    scale_range: tuple[float, float] = (0.5, 2.0)
    hflip: bool = True
    vflip: bool = False
    color_jitter: float = 0.2
    loss: str = "ce+dice"
    class_weights: str | None = None  # None | inverse | median | sqrt | auto (= median)
    class_crops: float = 0.0  # share of crops centred on a pixel of a class drawn uniformly from the mask's classes
    grad_clip: float = 1.0  # max gradient norm; 0 disables
    ema: float = 0.0  # decay of an exponential moving average of the weights, validated and saved; 0 = off
    amp: bool = True  # mixed precision: fp16/bf16 on CUDA, bf16 on CPUs with native bf16 (AVX512-BF16/AMX)
    channels_last: bool | None = None  # None = on CUDA only (1.1x on an AVX2 CPU, 1.0x on an AVX-512 one)
    seed: int = 0
    deterministic: bool = False
    num_workers: int = -1  # -1 = chosen from the CPU count
    cache: bool = True  # keep decoded training images in memory when they fit in 2 GB
    val_fraction: float = 0.2
    test_fraction: float = 0.0
    val_every: int = 1
    patience: int = 0  # early stopping after this many validations without improvement; 0 = off
    max_steps_per_epoch: int = 0  # 0 = the whole training split every epoch
    device: str = "auto"
    sync_bn: bool = False  # under torchrun on GPUs: BatchNorm statistics over the global batch
    budget: float = 0.0  # seconds for the whole run; > 0 = plan the recipe for it (pixelwise.planner)
    keep: list = field(default_factory=list)  # with budget: options the planner leaves as given
    time_limit: float = 0.0  # wall seconds of the training loop; > 0 = training stops on the clock or after
    #                          `epochs`, whichever comes first, and the lr schedule follows the one further along
    validations: int = 0  # with time_limit: validations spread evenly over that time (the last at the end);
    #                       0 = every `val_every` epochs and when the time is up
    format: str = "auto"  # data set format (pixelwise.data.formats.FORMATS), detected when "auto"
    encoding: str = "auto"  # mask encoding (index, binary, rgb, jpeg-snap, 16bit), detected when "auto"
    classes_file: str | None = None  # a classes YAML to use instead of the data set's own
    resize_masks: str | None = None  # None: a mask/image size mismatch is an error; "nearest": resize masks
    skip_bad: bool = False  # leave out samples with problems (listed) instead of stopping
    max_pixels: int = DEFAULT_MAX_PIXELS  # images or masks above this many pixels are refused

    def to_dict(self) -> dict:
        d = asdict(self)
        d["scale_range"] = list(self.scale_range)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise PixelwiseError(f"unknown training options: {', '.join(sorted(unknown))}")
        d = dict(d)
        if "scale_range" in d and d["scale_range"] is not None:
            d["scale_range"] = tuple(d["scale_range"])
        return cls(**d)
