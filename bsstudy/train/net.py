"""The networks a run can train, built from the `model` config group through its `_target_`.

Any `torch.nn.Module` whose constructor takes `input_size` and `num_classes` (besides its own settings) and whose
forward maps [n, input_size] float inputs to [n, num_classes] log-probabilities trains as the study's MLP does
(the NLL loss, autograd + the torch optimizer). Weight layers in `self.layers` (a ModuleList) give per-layer
numbers to the probes that report per layer. The MLP alone also has the exact
hand-written fast step (train/fast_step.py); config.fast_step_blocker names what rules it out.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from torch import nn

from bsstudy import ConfigError, UsageError
from bsstudy.config import MLP_TARGET, check_geometry_bn


class MLP(nn.Module):
    """input -> [Linear -> (BatchNorm1d) -> ReLU] x len(hidden_sizes) -> Linear -> log-softmax.

    With `batch_norm`, hidden layer i is followed by `norms[i]` (Keskar et al. 2017's network F1).
    `geometry_bn` ("running" or "batch") is how the geometry measures evaluate those batch norms
    (bsstudy/measures/objective.py); it changes nothing in training or in the per-epoch evaluation.

    >>> MLP(784, [1024, 1024], 10)(torch.zeros(2, 784)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        input_size: int,
        hidden_sizes: list[int],
        num_classes: int,
        batch_norm: bool = False,
        geometry_bn: str = "running",
    ):
        super().__init__()
        self.geometry_bn = check_geometry_bn(geometry_bn)
        sizes = [input_size, *hidden_sizes, num_classes]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        self.norms = nn.ModuleList(nn.BatchNorm1d(h) for h in hidden_sizes) if batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers[:-1]):
            x = layer(x)
            x = torch.relu(self.norms[i](x) if self.norms is not None else x)
        return F.log_softmax(self.layers[-1](x), dim=1)


class LeNet5(nn.Module):
    """LeCun et al. (1998)'s LeNet-5 with ReLU and max pooling, for square grayscale images (28x28: MNIST,
    Fashion-MNIST) given as flat rows of input_size = side^2 pixels:

        conv 5x5 (channels[0], padding 2) -> ReLU -> max-pool 2 -> conv 5x5 (channels[1]) -> ReLU -> max-pool 2
        -> [Linear -> ReLU] x len(hidden_sizes) -> Linear -> log-softmax

    >>> LeNet5(784, 10)(torch.zeros(2, 784)).shape
    torch.Size([2, 10])
    """

    MIN_SIDE = 12  # the second 5x5 convolution needs at least 5x5 pixels after the first pooling

    def __init__(
        self,
        input_size: int,
        num_classes: int,
        channels: list[int] = (6, 16),
        hidden_sizes: list[int] = (120, 84),
        geometry_bn: str = "running",
    ):
        super().__init__()
        self.side = image_side(input_size, self.MIN_SIDE)
        self.geometry_bn = check_geometry_bn(geometry_bn)  # no batch norm: the measures' convention is moot
        c1, c2 = channels
        after_convs = ((self.side // 2) - 4) // 2  # padding 2 keeps the side; pooling halves; a 5x5 conv takes 4
        sizes = [c2 * after_convs**2, *hidden_sizes, num_classes]
        self.layers = nn.ModuleList(
            [nn.Conv2d(1, c1, 5, padding=2), nn.Conv2d(c1, c2, 5)]
            + [nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(-1, 1, self.side, self.side)
        for conv in self.layers[:2]:
            x = F.max_pool2d(torch.relu(conv(x)), 2)
        x = x.flatten(1)
        for layer in self.layers[2:-1]:
            x = torch.relu(layer(x))
        return F.log_softmax(self.layers[-1](x), dim=1)


def image_side(input_size: int, min_side: int) -> int:
    """The side of a square image of `input_size` pixels; a ConfigError when there is none or it is too small."""
    side = math.isqrt(input_size)
    if side * side != input_size or side < min_side:
        raise ConfigError(
            f"model=cnn needs square images of at least {min_side}x{min_side} pixels (e.g. data=fashion_mnist, "
            f"28x28); this data set has {input_size} inputs per sample"
        )
    return side


def build_net(model_cfg, input_size: int, num_classes: int) -> nn.Module:
    """The network of the `model` config group for this data; configs recorded before `model._target_`
    existed are the MLP."""
    settings = dict(model_cfg.items())
    settings.setdefault("_target_", MLP_TARGET)
    try:
        return instantiate(settings, input_size=input_size, num_classes=num_classes, _convert_="all")
    except InstantiationException as err:
        if isinstance(err.__cause__, UsageError):
            raise err.__cause__ from None  # the network's own one-line check (e.g. model.geometry_bn)
        cause = err.__cause__ or err
        raise ConfigError(f"model._target_={settings['_target_']} cannot be built: {cause}") from None
