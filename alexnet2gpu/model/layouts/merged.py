"""The merged layout: both towers on one device as halves of one set of tensors (the numerical oracle).

`TowerStack(towers=2)` holds conv1 ... fc7 with grouped conv2/conv4/conv5, as caffe's bvlc_alexnet does;
every other layout must match this one's logits, gradients and steps. torch.fx can trace it (torchvision's
feature extraction): `check_input` stays one call in the graph, so the traced module checks its input too.
"""
from __future__ import annotations

import torch
from torch import nn

from ..layers import FC8, LAYERS, TOWERS, check_input
from ..stack import StackOptions, TowerStack
from .base import Layout

torch.fx.wrap("check_input")  # a leaf of torch.fx graphs: its checks read the input's values and shape


class AlexNet(Layout):
    """The merged layout on one device.

    Input: N x in_channels x 224 x 224 (or 227), raw 0..255 scale with the mean subtracted. Output: logits.
    Departures from torchvision's alexnet, all towards the paper: two towers (grouped conv2/4/5), LRN,
    48/128/192/192/128 maps per tower, dropout on the outputs of fc6 and fc7, the original conv1 rounding.
    `options` (model.StackOptions) chooses how the layers are computed, never what.
    """

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, init: str = "paper", dropout: float = 0.5,
                 options: StackOptions = StackOptions()):
        super().__init__(num_classes, in_channels, init)
        with self.built_on_meta(init):
            self.stack = TowerStack(TOWERS, in_channels, dropout, options)
            self.fc8 = nn.Linear(LAYERS[-1].out * TOWERS, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """What fc8 reads: fc7's output after its ReLU (and dropout, in training mode), N x 4096."""
        pad = check_input(x, self.in_channels, self.stack.conv1.weight)
        h = self.stack.conv_cross(self.stack.features(x, pad))
        h = self.stack.fully_connected(h, "fc6")
        return self.stack.fully_connected(h, "fc7")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc8(self.forward_features(x))

    # Canonical names are `conv1.weight`, not `stack.conv1.weight`: one format for every layout.
    def to_canonical(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name.removeprefix("stack."): t for name, t in tensors.items()}

    def from_canonical(self, canonical: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {("" if k.startswith(FC8) else "stack.") + k: t for k, t in canonical.items()}
