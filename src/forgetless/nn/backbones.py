"""Feature extractors used by the papers, each exposing ``out_features`` (the width of its output).

Heads are separate (:mod:`forgetless.nn.heads`) so that a method chooses one head over every class or
one head per task. ``create(name, input_shape, **options)`` builds a backbone by name.

Every backbone takes ``task_bn=n`` (default None: off): task-specific batch normalisation with n slots
(:class:`~forgetless.nn.taskwise.TaskBatchNorm`, per-task scale, bias and running statistics). Networks
without batch norm (mlp, simple-cnn, zenke-cnn) then get one after every linear/conv layer, before its
ReLU; the ResNets' batch norms become task-specific. With the option off the modules, parameters and
initialisation are exactly those of the plain network.

Pretrained networks: ``resnet18``, ``resnet50`` and ``densenet121`` in torchvision's layout
(:mod:`forgetless.nn.torchvision_layouts`) take ``pretrained=PATH``, a torchvision-format state-dict file,
and return the pooled features (512 / 2048 / 1024) of torchvision's network without its classifier; they
expect ImageNet-normalised inputs (their ``normalize`` and ``input_size`` attributes).

``resnet18`` has two stems, chosen with ``stem=``:

- ``"cifar"``: forgetless's small-image ResNet (3x3 stride-1 stem, no max-pool; keys ``conv1``, ``bn1``,
  ``stages.*``, ``shortcut``), the network of the CIFAR configs, unchanged (it is also the one CCGN gates);
- ``"imagenet"``: torchvision's ResNet-18 (7x7/2 stem, max-pool, ``layer1..4``, ``downsample``), the only one
  that loads weight files.

By default (``stem`` unset) a weight file or inputs larger than 64 x 64 pick ``"imagenet"``, else ``"cifar"``.
``resnet50`` and ``densenet121`` exist only in torchvision's layout, ``resnet32`` only for small images.
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, choices
from . import torchvision_layouts
from .taskwise import TaskBatchNorm


def _task_norm(features: int, task_bn: int | None, dims: int) -> nn.Module | None:
    return TaskBatchNorm(features, task_bn, dims=dims) if task_bn else None


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh,
                                                   "elu": nn.ELU}


class MLP(nn.Module):
    """Fully connected network on the flattened input (default 400-400 with ReLU, van de Ven & Tolias;
    ``activation`` picks another nonlinearity, e.g. the sigmoid of the hypernetwork paper's toy regression)."""

    def __init__(self, input_shape: Sequence[int], hidden: Sequence[int] = (400, 400),
                 task_bn: int | None = None, activation: str = "relu") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigError(f"unknown mlp activation {activation!r}; valid: {choices(ACTIVATIONS)}")
        sizes = [math.prod(input_shape), *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in itertools.pairwise(sizes):
            norm = _task_norm(b, task_bn, dims=1)
            layers += [nn.Linear(a, b), *([norm] if norm is not None else []), ACTIVATIONS[activation]()]
        self.layers = nn.Sequential(*layers)
        self.out_features = sizes[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class SimpleCNN(nn.Module):
    """The CCGN paper's SimpleCNN: three conv layers of ``channels`` filters with ReLU, 2x2 max-pooling
    after the first two, global average pooling (Abati et al., 2020, Sec. 4.1)."""

    def __init__(self, input_shape: Sequence[int], channels: int = 100, kernel_size: int = 3,
                 task_bn: int | None = None) -> None:
        super().__init__()
        c = input_shape[0]
        pad = kernel_size // 2
        self.conv1 = nn.Conv2d(c, channels, kernel_size, padding=pad)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size, padding=pad)
        self.conv3 = nn.Conv2d(channels, channels, kernel_size, padding=pad)
        self.pool = nn.MaxPool2d(2)
        self.out_features = channels
        if task_bn:
            self.norm1, self.norm2, self.norm3 = (_task_norm(channels, task_bn, 2) for _ in range(3))

    def _norm(self, i: int, x: torch.Tensor) -> torch.Tensor:
        norm = getattr(self, f"norm{i}", None)
        return x if norm is None else norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self._norm(1, self.conv1(x))))
        x = self.pool(torch.relu(self._norm(2, self.conv2(x))))
        x = torch.relu(self._norm(3, self.conv3(x)))
        return x.mean(dim=(2, 3))


class ZenkeCNN(nn.Module):
    """The CIFAR network of Zenke et al. (2017), used by SpaceNet: conv 32-32-64-64 (3x3; 'same' then
    'valid' padding in each pair, as in the Keras CIFAR-10 example it follows), 2x2 max-pool after each
    pair, then a 512-unit fully connected layer. Dropout is optional (SpaceNet uses none)."""

    def __init__(self, input_shape: Sequence[int], channels: Sequence[int] = (32, 32, 64, 64), fc: int = 512,
                 dropout: float = 0.0, task_bn: int | None = None) -> None:
        super().__init__()
        c, h, w = input_shape
        a, b, cc, d = channels

        def conv(c_in: int, c_out: int, padding: int) -> list[nn.Module]:
            norm = _task_norm(c_out, task_bn, 2)
            return [nn.Conv2d(c_in, c_out, 3, padding=padding), *([norm] if norm is not None else []), nn.ReLU()]

        self.features = nn.Sequential(
            *conv(c, a, 1), *conv(a, b, 0), nn.MaxPool2d(2),
            nn.Dropout(dropout / 2), *conv(b, cc, 1), *conv(cc, d, 0),
            nn.MaxPool2d(2), nn.Dropout(dropout / 2), nn.Flatten(),
        )
        side_h, side_w = ((h - 2) // 2 - 2) // 2, ((w - 2) // 2 - 2) // 2
        fc_norm = _task_norm(fc, task_bn, 1)
        self.fc = nn.Sequential(nn.Linear(d * side_h * side_w, fc), *([fc_norm] if fc_norm is not None else []),
                                nn.ReLU(), nn.Dropout(dropout))
        self.out_features = fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def _batch_norm(features: int, task_bn: int | None) -> nn.Module:
    return TaskBatchNorm(features, task_bn, dims=2) if task_bn else nn.BatchNorm2d(features)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, task_bn: int | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = _batch_norm(planes, task_bn)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = _batch_norm(planes, task_bn)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                                          _batch_norm(planes, task_bn))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet for small images: 3x3 stem without max-pooling, stages of basic blocks, global pooling.

    ``resnet18``: stages (2, 2, 2, 2) of width w, 2w, 4w, 8w (w = 64; 20 gives the 'reduced' ResNet-18
    of GEM/A-GEM). ``resnet32``: He et al.'s CIFAR ResNet, stages (5, 5, 5) of width 16, 32, 64.
    """

    def __init__(self, input_shape: Sequence[int], blocks: Sequence[int], width: int,
                 task_bn: int | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(input_shape[0], width, 3, 1, 1, bias=False)
        self.bn1 = _batch_norm(width, task_bn)
        stages, planes, in_planes = [], width, width
        for i, n in enumerate(blocks):
            stride = 1 if i == 0 else 2
            layers = []
            for j in range(n):
                layers.append(BasicBlock(in_planes, planes, stride if j == 0 else 1, task_bn))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
            planes *= 2
        self.stages = nn.Sequential(*stages)
        self.out_features = in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        return self.stages(x).mean(dim=(2, 3))


def _mlp(input_shape, hidden=(400, 400), task_bn=None, activation="relu"):
    return MLP(input_shape, hidden, task_bn=task_bn, activation=activation)


def _simple_cnn(input_shape, width=None, task_bn=None):
    return SimpleCNN(input_shape, channels=width or 100, task_bn=task_bn)


def _zenke(input_shape, width=None, task_bn=None):
    w = width or 32
    return ZenkeCNN(input_shape, channels=(w, w, 2 * w, 2 * w), task_bn=task_bn)


STEMS = ("cifar", "imagenet")
CIFAR_MAX_SIDE = 64  # default stem: "cifar" up to 64 x 64 inputs, "imagenet" above (or with a weight file)


def resolve_stem(stem: str | None, input_shape: Sequence[int], pretrained: str | None) -> str:
    """``resnet18``'s stem: the one asked for, else "imagenet" with a weight file or inputs over 64 pixels."""
    if stem is None:
        return "imagenet" if pretrained is not None or min(input_shape[1:]) > CIFAR_MAX_SIDE else "cifar"
    if stem not in STEMS:
        raise ConfigError(f"unknown resnet stem {stem!r}; valid: {choices(STEMS)}")
    if stem == "cifar" and pretrained is not None:
        raise ConfigError("pretrained weights are torchvision's layout: use stem=imagenet (or leave stem unset)")
    return stem


def _pretrained(net: nn.Module, name: str, pretrained: str | None) -> nn.Module:
    return net if pretrained is None else torchvision_layouts.load_pretrained(net, pretrained, name)


def _resnet18(input_shape, width=None, task_bn=None, stem=None, pretrained=None):
    if resolve_stem(stem, input_shape, pretrained) == "cifar":
        return ResNet(input_shape, (2, 2, 2, 2), width or 64, task_bn=task_bn)
    net = torchvision_layouts.resnet18(input_shape[0], width or 64, task_bn=task_bn)
    return _pretrained(net, "resnet18", pretrained)


def _resnet32(input_shape, width=None, task_bn=None):
    return ResNet(input_shape, (5, 5, 5), width or 16, task_bn=task_bn)


def _resnet50(input_shape, width=None, task_bn=None, pretrained=None):
    return _pretrained(torchvision_layouts.resnet50(input_shape[0], width or 64, task_bn=task_bn), "resnet50",
                       pretrained)


def _densenet121(input_shape, task_bn=None, pretrained=None):
    return _pretrained(torchvision_layouts.densenet121(input_shape[0], task_bn=task_bn), "densenet121", pretrained)


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "mlp": _mlp,
    "simple-cnn": _simple_cnn,
    "zenke-cnn": _zenke,
    "resnet18": _resnet18,
    "resnet32": _resnet32,
    "resnet50": _resnet50,
    "densenet121": _densenet121,
}


def options(name: str) -> tuple[str, ...]:
    """The options backbone ``name`` takes (its factory's keyword arguments)."""
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; valid: {choices(BACKBONES)}")
    return tuple(p for p in inspect.signature(BACKBONES[name]).parameters if p != "input_shape")


def create(name: str, input_shape: Sequence[int], **opts: Any) -> nn.Module:
    """Build backbone ``name``. Options (each backbone takes those of :func:`options`; any other is an error):
    ``hidden`` and ``activation`` (mlp), ``width`` (CNN base width), ``task_bn`` (number of tasks for
    task-specific batch norm; None/0: off), ``pretrained`` (resnet18/50, densenet121: a torchvision-format
    state-dict file), ``stem`` (resnet18: "cifar" or "imagenet")."""
    valid = options(name)
    unknown = [k for k in opts if k not in valid]
    if unknown:
        raise ConfigError(f"unknown option {unknown[0]!r} for backbone {name!r}; valid: {', '.join(valid)}")
    task_bn = opts.get("task_bn")
    if task_bn is not None and (not isinstance(task_bn, int) or task_bn < 0):
        raise ConfigError(f"task_bn must be a number of tasks (>= 1) or None, got {task_bn!r}")
    if name != "mlp" and len(input_shape) != 3:
        raise ConfigError(f"backbone {name!r} needs image inputs (C x H x W), got shape {tuple(input_shape)}")
    return BACKBONES[name](tuple(input_shape), **opts)


def feature_width(module: nn.Module, input_shape: Sequence[int]) -> int:
    """``module.out_features`` if declared, else measured with one dummy forward pass."""
    width = getattr(module, "out_features", None)
    if isinstance(width, int):
        return width
    with torch.no_grad():
        was_training = module.training
        module.eval()
        out = module(torch.zeros(1, *input_shape))
        module.train(was_training)
    return int(out.flatten(1).shape[1])
