"""BiSeNet V2 (Yu et al., IJCV 2021): a two-path network for real-time segmentation from scratch.

None of the libraries pixelwise builds on ships one, so it is written here from the paper:

- a **detail path**: wide 3x3 convolutions in three stages down to 1/8 of the input (64, 64, 128
  channels), keeping edges and thin structures;
- a **semantic path**: a stem to 1/4 (16 channels), gather-and-expansion layers down to 1/32
  (32, 64, 128 channels; depthwise convolutions that widen six times inside) and a context block
  that adds the image's global average to every position;
- a **guided aggregation** layer at 1/8, where each path gates the other (the semantic path's
  sigmoid on the detail path at 1/8, the detail path brought down to 1/32 and gated there), and
- a **head**: a 3x3 convolution to ``head_channels`` (1024 in the paper), the classifier, and
  bilinear upsampling back to the input size.

The input must be a multiple of 32 (``SegmentationModel`` pads it). Two differences from the
paper: the auxiliary heads it trains the semantic path with (its "booster") are not built, so
the network trains with the one loss every architecture gets; and the context block's pooled
vector goes through a 1x1 convolution without batch norm, since batch norm of one value per
channel fails for batches of one image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

STRIDE = 32
HEAD_CHANNELS = 1024


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, relu: bool = True) -> nn.Sequential:
    """Convolution without bias, batch norm, and ReLU unless ``relu`` is False."""
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class DetailPath(nn.Sequential):
    def __init__(self, cin: int):
        super().__init__(
            _conv(cin, 64, stride=2),
            _conv(64, 64),
            _conv(64, 64, stride=2),
            _conv(64, 64),
            _conv(64, 64),
            _conv(64, 128, stride=2),
            _conv(128, 128),
            _conv(128, 128),
        )


class Stem(nn.Module):
    """To 1/4: a strided 3x3 convolution, then a convolution path and a max-pool path, concatenated."""

    def __init__(self, cin: int, cout: int = 16):
        super().__init__()
        self.conv = _conv(cin, cout, stride=2)
        self.down = nn.Sequential(_conv(cout, cout // 2, k=1), _conv(cout // 2, cout, stride=2))
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.fuse = _conv(2 * cout, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.fuse(torch.cat([self.down(x), self.pool(x)], 1))


class GatherExpand(nn.Module):
    """Gather-and-expansion layer: 3x3 convolution, depthwise 3x3 widening ``expand`` times (two of
    them when it halves the size), 1x1 projection, added to the input (projected when it changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, expand: int = 6):
        super().__init__()
        mid = cin * expand
        depthwise = [_conv(cin, mid, stride=stride, groups=cin, relu=False)]
        if stride > 1:
            depthwise.append(_conv(mid, mid, groups=mid, relu=False))
        self.body = nn.Sequential(_conv(cin, cin), *depthwise, _conv(mid, cout, k=1, relu=False))
        if stride == 1 and cin == cout:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                _conv(cin, cin, stride=stride, groups=cin, relu=False), _conv(cin, cout, k=1, relu=False)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class ContextBlock(nn.Module):
    """Adds the image's global average (through a 1x1 convolution) to every position, then a 3x3 convolution."""

    def __init__(self, c: int):
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(c, c, 1), nn.ReLU(inplace=True))
        self.out = _conv(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(x + self.squeeze(x.mean((2, 3), keepdim=True)))


class SemanticPath(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.stem = Stem(cin, 16)  # 1/4
        self.stages = nn.Sequential(
            GatherExpand(16, 32, stride=2),  # 1/8
            GatherExpand(32, 32),
            GatherExpand(32, 64, stride=2),  # 1/16
            GatherExpand(64, 64),
            GatherExpand(64, 128, stride=2),  # 1/32
            GatherExpand(128, 128),
            GatherExpand(128, 128),
            GatherExpand(128, 128),
        )
        self.context = ContextBlock(128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.context(self.stages(self.stem(x)))


def _depthwise_then_pointwise(c: int) -> nn.Sequential:
    return nn.Sequential(_conv(c, c, groups=c, relu=False), nn.Conv2d(c, c, 1, bias=False))


class GuidedAggregation(nn.Module):
    """Merges the detail path (1/8) and the semantic path (1/32), each gating the other."""

    def __init__(self, c: int = 128):
        super().__init__()
        self.detail_high = _depthwise_then_pointwise(c)
        self.detail_low = nn.Sequential(_conv(c, c, stride=2, relu=False), nn.AvgPool2d(3, 2, 1))
        self.semantic_high = _conv(c, c, relu=False)
        self.semantic_low = _depthwise_then_pointwise(c)
        self.fuse = _conv(c, c)

    def forward(self, detail: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        size = detail.shape[-2:]
        gate = F.interpolate(self.semantic_high(semantic), size=size, mode="bilinear", align_corners=False)
        high = self.detail_high(detail) * torch.sigmoid(gate)
        low = self.detail_low(detail) * torch.sigmoid(self.semantic_low(semantic))
        return self.fuse(high + F.interpolate(low, size=size, mode="bilinear", align_corners=False))


class Backbone(nn.Module):
    """The two paths (what a ``--pretrained`` state dict of the backbone fills)."""

    def __init__(self, cin: int):
        super().__init__()
        self.detail = DetailPath(cin)
        self.semantic = SemanticPath(cin)


class BiSeNetV2(nn.Module):
    """``(N, in_channels, H, W)``, H and W multiples of 32 -> ``(N, classes, H, W)`` logits."""

    def __init__(self, in_channels: int, classes: int, head_channels: int = HEAD_CHANNELS, dropout: float = 0.0):
        super().__init__()
        self.backbone = Backbone(in_channels)
        self.aggregate = GuidedAggregation(128)
        head = [_conv(128, head_channels)]
        if dropout > 0:
            head.append(nn.Dropout2d(dropout))
        self.head = nn.Sequential(*head, nn.Conv2d(head_channels, classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        merged = self.aggregate(self.backbone.detail(x), self.backbone.semantic(x))
        return F.interpolate(self.head(merged), size=x.shape[-2:], mode="bilinear", align_corners=False)
