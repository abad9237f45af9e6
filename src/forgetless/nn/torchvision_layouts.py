"""ResNet-18/50 and DenseNet-121 with torchvision's exact module and parameter layout (written here; torchvision
is not a dependency), so that weight files saved from torchvision (``torch.save(model.state_dict(), PATH)``)
load into them::

    net = backbones.create("resnet50", (3, 224, 224), pretrained="resnet50.pth")
    net(images)  # -> N x 2048: torchvision's network with ``fc`` replaced by the identity

The modules are torchvision's up to the classifier: ``conv1, bn1, relu, maxpool, layer1..4, avgpool`` with
``BasicBlock``/``Bottleneck`` (stride on the 3x3 convolution, "ResNet v1.5") and ``downsample`` shortcuts;
``features.{conv0,norm0,denseblock*,transition*,norm5}`` for DenseNet. The classifier is not built, and its
keys in a weight file (``fc.*`` / ``classifier.*``) are ignored: a method adds its own heads. Without a file,
weights are initialised as torchvision does (He-normal convolutions, unit batch-norm scale).

**Inputs.** The networks expect what they were pretrained on: RGB in [0, 1] normalised with the ImageNet mean
and std (:data:`IMAGENET_MEAN`, :data:`IMAGENET_STD`), at ``224 x 224`` (:data:`IMAGENET_INPUT_SIZE`). The
networks do *not* normalise inside ``forward`` (that would no longer be torchvision's function); each carries
the values as ``normalize = (mean, std)`` and ``input_size`` attributes, and the ``domain-chain`` benchmark
applies them with ``--bench mean_std=imagenet`` (its default is each dataset's own statistics). Any side
>= 32 runs (global average pooling), but the pretrained features are those of 224-pixel images.

**Task batch norm.** With ``task_bn=n`` every batch norm is a :class:`~forgetless.nn.taskwise.TaskBatchNorm`
(keys ``<name>.norms.<slot>.*``); a weight file's batch norm ``<name>.*`` is copied into every slot, so each
task starts from the pretrained scale, bias and running statistics.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .taskwise import TaskBatchNorm

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
IMAGENET_INPUT_SIZE = 224
CLASSIFIER_PREFIXES = ("fc.", "classifier.")


def _norm(features: int, task_bn: int | None) -> nn.Module:
    return TaskBatchNorm(features, task_bn, dims=2) if task_bn else nn.BatchNorm2d(features)


class BasicBlock(nn.Module):
    """torchvision.models.resnet.BasicBlock."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 task_bn: int | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = _norm(planes, task_bn)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = _norm(planes, task_bn)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision.models.resnet.Bottleneck (groups 1, base width 64: stride on the 3x3 convolution)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 task_bn: int | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = _norm(planes, task_bn)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = _norm(planes, task_bn)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = _norm(planes * self.expansion, task_bn)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class TorchvisionResNet(nn.Module):
    """torchvision's ResNet without ``fc``: 7x7/2 stem, 3x3/2 max-pool, four stages, global average pooling."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: Sequence[int], in_channels: int = 3,
                 width: int = 64, task_bn: int | None = None) -> None:
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
        self.bn1 = _norm(width, task_bn)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        for i, n in enumerate(layers):
            setattr(self, f"layer{i + 1}", self._make_layer(block, width * 2**i, n, 1 if i == 0 else 2, task_bn))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.n_layers = len(layers)
        self.out_features = self.inplanes
        self.normalize = (IMAGENET_MEAN, IMAGENET_STD)
        self.input_size = IMAGENET_INPUT_SIZE
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block, planes: int, blocks: int, stride: int, task_bn: int | None) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                       _norm(planes * block.expansion, task_bn))
        layers = [block(self.inplanes, planes, stride, downsample, task_bn)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, task_bn=task_bn) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.n_layers):
            x = getattr(self, f"layer{i + 1}")(x)
        return torch.flatten(self.avgpool(x), 1)


class _DenseLayer(nn.Module):
    def __init__(self, in_features: int, growth: int, bn_size: int, task_bn: int | None) -> None:
        super().__init__()
        self.norm1 = _norm(in_features, task_bn)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_features, bn_size * growth, 1, bias=False)
        self.norm2 = _norm(bn_size * growth, task_bn)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, 1, 1, bias=False)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = self.conv1(self.relu1(self.norm1(torch.cat(features, 1))))
        return self.conv2(self.relu2(self.norm2(x)))


class _DenseBlock(nn.ModuleDict):
    def __init__(self, n: int, in_features: int, growth: int, bn_size: int, task_bn: int | None) -> None:
        super().__init__()
        for i in range(n):
            self.add_module(f"denselayer{i + 1}", _DenseLayer(in_features + i * growth, growth, bn_size, task_bn))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class _Transition(nn.Sequential):
    def __init__(self, in_features: int, out_features: int, task_bn: int | None) -> None:
        super().__init__(OrderedDict(norm=_norm(in_features, task_bn), relu=nn.ReLU(inplace=True),
                                     conv=nn.Conv2d(in_features, out_features, 1, bias=False),
                                     pool=nn.AvgPool2d(2, 2)))


class TorchvisionDenseNet(nn.Module):
    """torchvision's DenseNet (no dropout, not memory-efficient) without ``classifier``; densenet121 defaults."""

    def __init__(self, in_channels: int = 3, growth: int = 32, blocks: Sequence[int] = (6, 12, 24, 16),
                 init_features: int = 64, bn_size: int = 4, task_bn: int | None = None) -> None:
        super().__init__()
        self.features = nn.Sequential(OrderedDict(
            conv0=nn.Conv2d(in_channels, init_features, 7, 2, 3, bias=False), norm0=_norm(init_features, task_bn),
            relu0=nn.ReLU(inplace=True), pool0=nn.MaxPool2d(3, 2, 1)))
        n = init_features
        for i, count in enumerate(blocks):
            self.features.add_module(f"denseblock{i + 1}", _DenseBlock(count, n, growth, bn_size, task_bn))
            n += count * growth
            if i != len(blocks) - 1:
                self.features.add_module(f"transition{i + 1}", _Transition(n, n // 2, task_bn))
                n //= 2
        self.features.add_module("norm5", _norm(n, task_bn))
        self.out_features = n
        self.normalize = (IMAGENET_MEAN, IMAGENET_STD)
        self.input_size = IMAGENET_INPUT_SIZE
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.features(x), inplace=True)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def resnet18(in_channels: int = 3, width: int = 64, task_bn: int | None = None) -> TorchvisionResNet:
    return TorchvisionResNet(BasicBlock, (2, 2, 2, 2), in_channels, width, task_bn)


def resnet50(in_channels: int = 3, width: int = 64, task_bn: int | None = None) -> TorchvisionResNet:
    return TorchvisionResNet(Bottleneck, (3, 4, 6, 3), in_channels, width, task_bn)


def densenet121(in_channels: int = 3, task_bn: int | None = None) -> TorchvisionDenseNet:
    return TorchvisionDenseNet(in_channels, task_bn=task_bn)


# ------------------------------------------------------------------------------------------ weight files

_SLOT = re.compile(r"^(.*)\.norms\.\d+\.([^.]+)$")


def plain_key(module: nn.Module, key: str, task_norms: set[str] | None = None) -> str:
    """The torchvision key of one of ``module``'s state-dict keys: a task batch norm's slot
    ``<name>.norms.<i>.<entry>`` reads the plain batch norm's ``<name>.<entry>``."""
    if task_norms is None:
        task_norms = {n for n, m in module.named_modules() if isinstance(m, TaskBatchNorm)}
    match = _SLOT.match(key)
    if match and match.group(1) in task_norms:
        return f"{match.group(1)}.{match.group(2)}"
    return key


def plain_state_layout(module: nn.Module) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    """``(key, shape, dtype)`` of the torchvision-format state dict ``module`` loads, in order (a task
    batch norm's slots count once)."""
    task_norms = {n for n, m in module.named_modules() if isinstance(m, TaskBatchNorm)}
    seen: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
    for key, value in module.state_dict().items():
        seen.setdefault(plain_key(module, key, task_norms), (tuple(value.shape), value.dtype))
    return [(k, shape, dtype) for k, (shape, dtype) in seen.items()]


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state-dict file (``torch.save(model.state_dict(), path)``), loaded without unpickling code."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"pretrained weights not found: {path}") from None
    except Exception as exc:  # any unreadable file is the same user error
        why = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path} is not a torch state-dict file ({why})") from None
    if not isinstance(state, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                 for k, v in state.items()):
        raise ConfigError(f"{path} is not a state dict (a mapping of parameter names to tensors), "
                          f"got {type(state).__name__}")
    return dict(state)


def load_pretrained(module: nn.Module, path: str | os.PathLike, name: str,
                    ignore: Sequence[str] = CLASSIFIER_PREFIXES) -> nn.Module:
    """Load a torchvision-format state-dict file into ``module`` (exactly its keys and shapes, keys under
    ``ignore`` skipped; a task batch norm's every slot gets the file's batch norm). Any missing,
    unexpected or mis-shaped key is a one-line :class:`ConfigError` naming it."""
    state = read_state_dict(path)
    own = module.state_dict()
    task_norms = {n for n, m in module.named_modules() if isinstance(m, TaskBatchNorm)}
    sources = {key: plain_key(module, key, task_norms) for key in own}
    expected = dict.fromkeys(sources.values())
    ignored = tuple(ignore)

    def fail(kind: str, keys: list[str], detail: str = "") -> None:
        more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
        raise ConfigError(f"{path}: {kind} key {keys[0]!r}{detail}{more} for backbone {name!r} "
                          f"(expected torchvision's {name} state dict)")

    missing = [k for k in expected if k not in state]
    if missing:
        fail("missing", missing)
    unexpected = [k for k in state if k not in expected and not k.startswith(ignored)]
    if unexpected:
        fail("unexpected", unexpected)
    shapes = {own_key: own[own_key].shape for own_key in own}
    bad = [(own_key, src) for own_key, src in sources.items() if state[src].shape != shapes[own_key]]
    if bad:
        own_key, src = bad[0]
        fail("mis-shaped", [src for _, src in bad],
             f" (shape {tuple(state[src].shape)}, the network has {tuple(shapes[own_key])})")
    module.load_state_dict({own_key: state[src].to(own[own_key].dtype) for own_key, src in sources.items()})
    return module


__all__ = ["IMAGENET_INPUT_SIZE", "IMAGENET_MEAN", "IMAGENET_STD", "TorchvisionDenseNet", "TorchvisionResNet",
           "densenet121", "load_pretrained", "plain_state_layout", "read_state_dict", "resnet18", "resnet50"]
