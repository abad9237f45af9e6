"""Conditional channel gating (Abati et al., CVPR 2020, Sec. 3.2-3.3): per-task gating modules and gated
networks that run one stream of computation per task through shared layers.

- :class:`GatingModule`: one task's gates for one layer. Input: the layer's *input* feature map after global
  average pooling; an MLP (``hidden`` = 16 units, batch norm, ReLU) and a linear map give one logit per output
  channel; binary gates come from the shared Gumbel-sigmoid straight-through gate
  (:func:`forgetless.nn.masks.gumbel_sigmoid_gate`, temperature 2/3) in training, ``logit > 0`` at test.
  A ``frozen`` module (a finished task) stays in evaluation mode whatever the network's mode.
- :class:`GateBank`: the gating modules of every task for one layer, plus ``allowed`` (per finished task,
  the channels whose relevance passed the threshold: a finished task never opens a re-initialised kernel)
  and ``frozen`` (the union over finished tasks: kernels that no longer change).
- :class:`GatedSimpleCNN`: the backbone's SimpleCNN with a gate bank per conv layer, gating after pooling.
- :class:`GatedResNet`: a ResNet whose stem and basic blocks are gated as in Fig. 3 (gates after the first
  convolution and after the residual sum; the downsampling shortcut's kernels follow the second gates).

Streams are a leading dimension: a gated network maps ``x`` (B, ...) and ``tasks`` (T task ids) to features
(T, B, C) and the gates of every layer (T, B, C_l). The shared convolutions run once per layer on the
(T*B, ...) batch; only the tiny gating MLPs (and task batch norms) are applied per stream.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal, get_args

import torch
from torch import nn

from .backbones import BasicBlock, ResNet, SimpleCNN
from .masks import CCGN_TEMPERATURE, gumbel_sigmoid_gate
from .taskwise import TaskBatchNorm

GATE_HIDDEN = 16  # Sec. 3.2: one hidden layer of 16 units
KernelInit = Literal["default", "kaiming"]
KERNEL_INITS: tuple[str, ...] = get_args(KernelInit)
GATE_BIAS = 3.0  # initial logit bias: gates start open (P(open) = sigmoid(3) = 0.95 with the logistic noise)


class GatingModule(nn.Module):
    """``G_t^l``: pooled input (B, C_in) -> one gate logit per output channel (B, C_out)."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int = GATE_HIDDEN, bias: float = GATE_BIAS) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_channels, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, out_channels)
        with torch.no_grad():  # the paper does not say; open gates let the kernels learn first (docs/ccgn.md)
            self.fc2.bias.fill_(bias)
        self.frozen = False

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.bn(self.fc1(pooled))))

    def train(self, mode: bool = True) -> GatingModule:
        # A finished task's gates are deterministic and its batch-norm statistics fixed, in any mode.
        return super().train(mode and not self.frozen)

    def freeze(self) -> None:
        self.frozen = True
        self.requires_grad_(False)
        self.eval()

    def macs(self) -> int:
        return self.fc1.in_features * self.fc1.out_features + self.fc2.in_features * self.fc2.out_features


def _pool(h: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """Global average pooling over the dimensions after ``channel_dim``."""
    return h.mean(dim=tuple(range(channel_dim + 1, h.dim()))) if h.dim() > channel_dim + 1 else h


class GateBank(nn.Module):
    """The gating modules of all tasks for one layer, and which of the layer's kernels each task owns."""

    def __init__(self, in_channels: int, out_channels: int, n_tasks: int, hidden: int = GATE_HIDDEN,
                 temperature: float = CCGN_TEMPERATURE, bias: float = GATE_BIAS) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.temperature = temperature
        self.modules_ = nn.ModuleList(GatingModule(in_channels, out_channels, hidden, bias) for _ in range(n_tasks))
        self.register_buffer("allowed", torch.ones(n_tasks, out_channels, dtype=torch.bool))
        self.register_buffer("frozen", torch.zeros(out_channels, dtype=torch.bool))
        self.noise = True  # False: training gates without Gumbel noise (hard threshold, sigmoid surrogate)

    def forward(self, h: torch.Tensor, tasks: Sequence[int], shared_input: bool = False) -> torch.Tensor:
        """Gates (T, B, C_out) for input ``h`` (T, B, C_in, ...) or, ``shared_input``, (B, C_in, ...) read by
        every stream."""
        pooled = _pool(h, 1 if shared_input else 2)
        out = []
        for i, t in enumerate(tasks):
            module = self.modules_[t]
            logits = module(pooled if shared_input else pooled[i])
            noise = None if self.noise or not module.training else torch.zeros_like(logits)
            gates = gumbel_sigmoid_gate(logits, self.temperature, training=module.training, noise=noise)
            out.append(gates * self.allowed[t].to(gates.dtype))
        return torch.stack(out)

    @torch.no_grad()
    def settle(self, task: int, relevance: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
        """After ``task``: its kernels with relevance above ``threshold`` become its own and frozen; its gating
        module is frozen. Returns the kernels that stay learnable (to be re-initialised)."""
        keep = relevance > threshold
        self.allowed[task] = keep
        self.frozen |= keep
        self.modules_[task].freeze()
        return ~self.frozen

    def macs(self) -> int:
        return self.modules_[0].macs()


# ------------------------------------------------------------------------------------------ kernels

class GatedKernels:
    """The parameters whose output-channel rows a gate bank's relevance freezes (weights and biases of the
    convolutions it gates). Not a module: it only refers to parameters owned elsewhere."""

    def __init__(self, convs: Sequence[nn.Conv2d]) -> None:
        self.convs = list(convs)

    def params(self) -> Iterator[nn.Parameter]:
        for conv in self.convs:
            yield conv.weight
            if conv.bias is not None:
                yield conv.bias

    @torch.no_grad()
    def reinitialize(self, rows: torch.Tensor | None = None, init: str = "default") -> None:
        """Fresh initialisation of the kernels in ``rows`` (None: all): ``default`` is that of ``nn.Conv2d``;
        ``kaiming`` is He's normal initialisation for ReLU networks with zero biases."""
        if rows is not None and not bool(rows.any()):
            return
        if init not in KERNEL_INITS:
            raise ValueError(f"kernel init {init!r} is not valid; valid: {', '.join(KERNEL_INITS)}")
        picked = slice(None) if rows is None else rows
        for conv in self.convs:
            if init == "kaiming":
                weight = torch.empty_like(conv.weight[picked])
                nn.init.kaiming_normal_(weight, nonlinearity="relu")  # fan-in of one kernel: C_in x k x k
                bias = None if conv.bias is None else torch.zeros_like(conv.bias[picked])
            elif isinstance(conv, nn.Linear):  # a user's network: its Linear layers are gated too
                fresh = nn.Linear(conv.in_features, conv.out_features, bias=conv.bias is not None)
                fresh = fresh.to(conv.weight.device)
            else:
                fresh = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                                  bias=conv.bias is not None).to(conv.weight.device)
                weight = fresh.weight[picked]
                bias = None if conv.bias is None else fresh.bias[picked]
            conv.weight[picked] = weight
            if bias is not None:
                conv.bias[picked] = bias


# ------------------------------------------------------------------------------------- gated networks

class GatedNetwork(nn.Module):
    """Common interface of gated backbones: ``forward(x, tasks) -> (features (T, B, C), [gates (T, B, C_l)])``,
    ``banks`` (one per gated layer, forward order), ``kernels`` (per bank), ``macs(gates)`` and ``dense_macs``."""

    banks: nn.ModuleList
    out_features: int

    def kernels(self) -> list[GatedKernels]:  # pragma: no cover - abstract
        raise NotImplementedError

    def freeze_rows(self) -> list[tuple[nn.Parameter, torch.Tensor]]:
        """(parameter, frozen output rows) for every gated kernel tensor."""
        pairs = []
        for bank, kernels in zip(self.banks, self.kernels(), strict=True):
            for p in kernels.params():
                pairs.append((p, bank.frozen))
        return pairs


def _conv_macs(conv: nn.Conv2d, c_in: torch.Tensor | float, c_out: torch.Tensor | float, spatial: int):
    """MACs of ``conv`` with ``c_in`` input and ``c_out`` output channels active on a ``spatial``-pixel output."""
    k = conv.kernel_size[0] * conv.kernel_size[1] // conv.groups
    return c_in * c_out * k * spatial


class GatedSimpleCNN(GatedNetwork):
    """SimpleCNN (three 3x3 convolutions, max-pooling after the first two, global average pooling) with a gate
    bank per convolution, applied after pooling (Sec. 4.1). Reuses the backbone's layers."""

    def __init__(self, cnn: SimpleCNN, n_tasks: int, hidden: int = GATE_HIDDEN,
                 temperature: float = CCGN_TEMPERATURE, bias: float = GATE_BIAS) -> None:
        super().__init__()
        self.cnn = cnn
        convs = [cnn.conv1, cnn.conv2, cnn.conv3]
        self.banks = nn.ModuleList(GateBank(c.in_channels, c.out_channels, n_tasks, hidden, temperature, bias)
                                   for c in convs)
        self.out_features = cnn.out_features
        self._spatial: list[int] = []

    def convs(self) -> list[nn.Conv2d]:
        return [self.cnn.conv1, self.cnn.conv2, self.cnn.conv3]

    def kernels(self) -> list[GatedKernels]:
        return [GatedKernels([c]) for c in self.convs()]

    def forward(self, x: torch.Tensor, tasks: Sequence[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        n_streams, batch = len(tasks), x.shape[0]
        gates_all, spatial = [], []
        h: torch.Tensor | None = None
        for i, conv in enumerate(self.convs()):
            if i == 0:  # every stream reads the same image: convolve it once
                g = self.banks[0](x, tasks, shared_input=True)
                out = self.cnn.pool(torch.relu(self.cnn._norm(1, conv(x))))
                spatial.append(out.shape[-1] * out.shape[-2] * 4)  # conv output before pooling
                out = out.unsqueeze(0) * g[..., None, None]
            else:
                g = self.banks[i](h, tasks)
                out = torch.relu(self.cnn._norm(i + 1, conv(h.flatten(0, 1))))
                spatial.append(out.shape[-1] * out.shape[-2])
                if i < 2:
                    out = self.cnn.pool(out)
                out = out.view(n_streams, batch, *out.shape[1:]) * g[..., None, None]
            gates_all.append(g)
            h = out
        self._spatial = spatial
        return h.mean(dim=(3, 4)), gates_all

    def macs(self, gates: Sequence[torch.Tensor], input_channels: int, paper: bool = False) -> torch.Tensor:
        """Effective MACs per stream and sample (T, B): convolutions on open channels only (a kernel reads the
        previous layer's open channels), plus the gating modules. ``paper``: the convention that reproduces the
        paper's Table 3 backbone figure (input channels not counted, convolutions only; docs/ccgn.md)."""
        total = 0
        prev: torch.Tensor | float = float(input_channels)
        for conv, g, spatial, bank in zip(self.convs(), gates, self._spatial, self.banks, strict=True):
            open_out = g.sum(-1)
            if paper:
                total = total + _conv_macs(conv, 1.0, open_out, spatial)
            else:
                total = total + _conv_macs(conv, prev, open_out, spatial) + bank.macs()
            prev = open_out
        return total

    def dense_macs(self, input_channels: int, paper: bool = False) -> int:
        total, prev = 0, input_channels
        for conv, spatial in zip(self.convs(), self._spatial, strict=True):
            total += _conv_macs(conv, 1 if paper else prev, conv.out_channels, spatial)
            prev = conv.out_channels
        return int(total)


def _stream_norm(norm: nn.Module, h: torch.Tensor, tasks: Sequence[int]) -> torch.Tensor:
    """Batch norm of a (T*B, C, H, W) batch: each stream with its own task's slot when task-specific."""
    if not isinstance(norm, TaskBatchNorm):
        return norm(h)
    chunks = h.chunk(len(tasks))
    return torch.cat([norm.slot(t)(c) for c, t in zip(chunks, tasks, strict=True)])


class GatedBasicBlock(nn.Module):
    """Fig. 3: gates ``g1`` after the first convolution (with its batch norm and ReLU) and ``g2`` after the
    residual sum (and ReLU). Both are conditioned on the block's input. ``g2`` decides which channels of the
    second convolution and, when the block downsamples, of the shortcut's convolution are computed."""

    def __init__(self, block: BasicBlock, n_tasks: int, hidden: int = GATE_HIDDEN,
                 temperature: float = CCGN_TEMPERATURE, bias: float = GATE_BIAS) -> None:
        super().__init__()
        self.block = block
        c_in, planes = block.conv1.in_channels, block.conv1.out_channels
        self.gate1 = GateBank(c_in, planes, n_tasks, hidden, temperature, bias)
        self.gate2 = GateBank(c_in, planes, n_tasks, hidden, temperature, bias)
        self.downsample = not isinstance(block.shortcut, nn.Identity)
        self._spatial = (0, 0)

    def forward(self, h: torch.Tensor, tasks: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n_streams, batch = h.shape[:2]
        b = self.block
        g1, g2 = self.gate1(h, tasks), self.gate2(h, tasks)
        flat = h.flatten(0, 1)
        out = torch.relu(_stream_norm(b.bn1, b.conv1(flat), tasks))
        out = out.view(n_streams, batch, *out.shape[1:]) * g1[..., None, None]
        out = _stream_norm(b.bn2, b.conv2(out.flatten(0, 1)), tasks)
        if self.downsample:
            conv, norm = b.shortcut[0], b.shortcut[1]
            short = _stream_norm(norm, conv(flat), tasks)
        else:
            short = flat
        out = torch.relu(out + short)
        self._spatial = (out.shape[-1] * out.shape[-2],) * 2
        out = out.view(n_streams, batch, *out.shape[1:]) * g2[..., None, None]
        return out, g1, g2


class GatedResNet(GatedNetwork):
    """A ResNet (basic blocks) with a gated stem convolution and gated blocks (Fig. 3). Its batch norms should
    be task-specific (``task_bn``): a shared one's running statistics would drift under frozen kernels."""

    def __init__(self, resnet: ResNet, n_tasks: int, hidden: int = GATE_HIDDEN,
                 temperature: float = CCGN_TEMPERATURE, bias: float = GATE_BIAS) -> None:
        super().__init__()
        self.resnet = resnet
        self.stem_gate = GateBank(resnet.conv1.in_channels, resnet.conv1.out_channels, n_tasks, hidden, temperature,
                                  bias)
        self.blocks = nn.ModuleList(GatedBasicBlock(block, n_tasks, hidden, temperature, bias)
                                    for stage in resnet.stages for block in stage)
        self.banks = nn.ModuleList([self.stem_gate, *(g for blk in self.blocks for g in (blk.gate1, blk.gate2))])
        self.out_features = resnet.out_features
        self._stem_spatial = 0

    def kernels(self) -> list[GatedKernels]:
        out = [GatedKernels([self.resnet.conv1])]
        for blk in self.blocks:
            out.append(GatedKernels([blk.block.conv1]))
            out.append(GatedKernels([blk.block.conv2, *([blk.block.shortcut[0]] if blk.downsample else [])]))
        return out

    def forward(self, x: torch.Tensor, tasks: Sequence[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        n_streams, batch = len(tasks), x.shape[0]
        g = self.stem_gate(x, tasks, shared_input=True)
        stem = self.resnet.conv1(x)
        self._stem_spatial = stem.shape[-1] * stem.shape[-2]
        h = stem.unsqueeze(0).expand(n_streams, *stem.shape).flatten(0, 1)
        h = torch.relu(_stream_norm(self.resnet.bn1, h, tasks))
        h = h.view(n_streams, batch, *h.shape[1:]) * g[..., None, None]
        gates = [g]
        for blk in self.blocks:
            h, g1, g2 = blk(h, tasks)
            gates += [g1, g2]
        return h.mean(dim=(3, 4)), gates

    def macs(self, gates: Sequence[torch.Tensor], input_channels: int, paper: bool = False) -> torch.Tensor:
        def ins(c):  # the paper's convention does not count input channels
            return 1.0 if paper else c

        total = _conv_macs(self.resnet.conv1, ins(float(input_channels)), gates[0].sum(-1), self._stem_spatial)
        total = total + (0 if paper else self.stem_gate.macs())
        prev = gates[0].sum(-1)
        for i, blk in enumerate(self.blocks):
            b, g1, g2 = blk.block, gates[1 + 2 * i].sum(-1), gates[2 + 2 * i].sum(-1)
            s1, s2 = blk._spatial
            total = total + _conv_macs(b.conv1, ins(prev), g1, s1) + _conv_macs(b.conv2, ins(g1), g2, s2)
            if blk.downsample:
                total = total + _conv_macs(b.shortcut[0], ins(prev), g2, s2)
            total = total + (0 if paper else blk.gate1.macs() + blk.gate2.macs())
            prev = g2
        return total

    def dense_macs(self, input_channels: int, paper: bool = False) -> int:
        def ins(c):
            return 1 if paper else c

        conv = self.resnet.conv1
        total = _conv_macs(conv, ins(input_channels), conv.out_channels, self._stem_spatial)
        prev = conv.out_channels
        for blk in self.blocks:
            b = blk.block
            s1, s2 = blk._spatial
            total += _conv_macs(b.conv1, ins(prev), b.conv1.out_channels, s1)
            total += _conv_macs(b.conv2, ins(b.conv1.out_channels), b.conv2.out_channels, s2)
            if blk.downsample:
                total += _conv_macs(b.shortcut[0], ins(prev), b.conv2.out_channels, s2)
            prev = b.conv2.out_channels
        return int(total)


# ------------------------------------------------------------------------------------ a user's network

class StreamBatchNorm(TaskBatchNorm):
    """A task batch norm that, while ``streams`` is set, normalises each stream's chunk of a (T*B, ...) batch
    with its own task's slot (what ``_stream_norm`` does for the built-in ResNet, from inside a user's
    ``forward`` that knows nothing of streams)."""

    streams: list[int] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.streams is None:
            return super().forward(x)
        chunks = x.chunk(len(self.streams))
        return torch.cat([self.slot(t)(c) for c, t in zip(chunks, self.streams, strict=True)])


class GatedLayer(nn.Module):
    """A user's Conv2d or Linear whose output channels (features) are multiplied, per stream, by the gates of
    its :class:`GateBank`, computed from the layer's own input (Sec. 3.2). Outside a gated forward pass
    (``tasks`` None) it is the plain layer. It replaces the layer in place
    (:func:`forgetless.nn.surgery.replace_layers`)."""

    def __init__(self, layer: nn.Conv2d | nn.Linear, bank: GateBank) -> None:
        super().__init__()
        self.layer = layer
        self.bank = bank
        self.tasks: list[int] | None = None
        self.gates: torch.Tensor | None = None
        self.spatial = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer(x)
        if self.tasks is None:
            return out
        if isinstance(self.layer, nn.Linear) and x.dim() != 2:
            raise ValueError(f"a gated Linear layer needs (batch, features) inputs, got shape {tuple(x.shape)}")
        n_streams = len(self.tasks)
        g = self.bank(x.view(n_streams, -1, *x.shape[1:]), self.tasks)  # (T, B, C_out)
        self.gates = g
        self.spatial = out[0, 0].numel()
        out = out.view(n_streams, -1, *out.shape[1:]) * g.view(*g.shape, *([1] * (out.dim() - 2)))
        return out.flatten(0, 1)


class GatedLayers(GatedNetwork):
    """CCGN on any network of Conv2d/Linear layers (a user's own, with any ``forward``): every layer's output
    channels get a gate bank fed by the layer's input, the network runs once on the T streams stacked along
    the batch (T*B samples; each stream's gates and batch-norm slots are its task's), and must return (T*B, C)
    features. Our reading of the paper's rule for an arbitrary graph: the gate sits at the layer's output,
    whatever follows it (a skip sum, pooling, a batch norm: a closed channel is then the norm's constant for
    the task, still a function of frozen state only); a layer's MACs count all of its input channels (which
    inputs are open is not traced through arbitrary code)."""

    def __init__(self, net: nn.Module, n_tasks: int, hidden: int = GATE_HIDDEN, temperature: float = CCGN_TEMPERATURE,
                 bias: float = GATE_BIAS, out_features: int | None = None) -> None:
        super().__init__()
        from .surgery import replace_layers

        def build(layer: nn.Module) -> GatedLayer:
            c_in = layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels
            c_out = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
            return GatedLayer(layer, GateBank(c_in, c_out, n_tasks, hidden, temperature, bias))

        self.net = net
        self.gated: list[GatedLayer] = replace_layers(net, build)
        if not self.gated:
            raise TypeError("the network has no Conv2d/Linear layer to gate")
        self.out_features = int(out_features if out_features is not None else getattr(net, "out_features", 0))
        self._spatial: list[int] = []

    @property
    def banks(self) -> list[GateBank]:  # owned by the gated layers (one registration per parameter)
        return [g.bank for g in self.gated]

    def kernels(self) -> list[GatedKernels]:
        return [GatedKernels([g.layer]) for g in self.gated]

    def _set_streams(self, tasks: list[int] | None) -> None:
        for m in self.net.modules():
            if isinstance(m, GatedLayer):
                m.tasks = tasks
                m.gates = None
            elif isinstance(m, StreamBatchNorm):
                m.streams = tasks

    def forward(self, x: torch.Tensor, tasks: Sequence[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        n_streams, batch = len(tasks), x.shape[0]
        self._set_streams(list(tasks))
        try:
            out = self.net(x.unsqueeze(0).expand(n_streams, *x.shape).flatten(0, 1))
            gates = [g.gates for g in self.gated]
            self._spatial = [g.spatial for g in self.gated]
        finally:
            self._set_streams(None)  # no tensor of this pass stays on the modules (nor in a checkpoint)
        if any(g is None for g in gates):
            missing = next(i for i, g in enumerate(gates) if g is None)
            raise ValueError(f"gated layer {missing} was not called in the forward pass")
        return out.reshape(n_streams, batch, -1), gates

    def _macs(self, layer: nn.Module, c_in, c_out, spatial: int):
        if isinstance(layer, nn.Linear):
            return c_in * c_out
        return _conv_macs(layer, c_in, c_out, spatial)

    def macs(self, gates: Sequence[torch.Tensor], input_channels: int, paper: bool = False) -> torch.Tensor:
        total = 0
        for g, gl, spatial in zip(gates, self.gated, self._spatial, strict=True):
            layer = gl.layer
            c_in = 1.0 if paper else float(layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels)
            total = total + self._macs(layer, c_in, g.sum(-1), spatial) + (0 if paper else gl.bank.macs())
        return total

    def dense_macs(self, input_channels: int, paper: bool = False) -> int:
        total = 0
        for gl, spatial in zip(self.gated, self._spatial, strict=True):
            layer = gl.layer
            linear = isinstance(layer, nn.Linear)
            c_in = 1 if paper else (layer.in_features if linear else layer.in_channels)
            total += self._macs(layer, c_in, layer.out_features if linear else layer.out_channels, spatial)
        return int(total)


def gate(backbone: nn.Module, n_tasks: int, hidden: int = GATE_HIDDEN, temperature: float = CCGN_TEMPERATURE,
         bias: float = GATE_BIAS) -> GatedNetwork:
    """The gated version of a ``simple-cnn`` or ``resnet18``/``resnet32`` backbone (sharing its layers)."""
    if isinstance(backbone, SimpleCNN):
        return GatedSimpleCNN(backbone, n_tasks, hidden, temperature, bias)
    if isinstance(backbone, ResNet):
        return GatedResNet(backbone, n_tasks, hidden, temperature, bias)
    raise TypeError(f"no gated version of {type(backbone).__name__}; gated backbones: simple-cnn, resnet18, resnet32")


def set_gate_noise(module: nn.Module, noise: bool) -> None:
    """Gumbel noise on (default) or off in every gate bank's training gates."""
    for m in module.modules():
        if isinstance(m, GateBank):
            m.noise = noise


def inference_macs(net: GatedNetwork, gates: Sequence[torch.Tensor], in_channels: int, head_outputs: int,
                   classifier_hidden: int | None = None, paper: bool = False) -> torch.Tensor:
    """Inference MACs per sample ``(B,)`` of the streams whose ``gates`` are given, counting open channels only:
    the gated layers, one linear head of ``head_outputs`` per stream and, with ``classifier_hidden``, CCGN's task
    classifier over the streams (a hidden layer of that width, one logit per stream). ``paper``: convolutions
    only, input channels not counted (the convention behind CCGN's Table 3, docs/ccgn.md)."""
    per_stream = net.macs(gates, in_channels, paper)  # (T, B)
    total = per_stream.sum(0)
    if paper:
        return total
    streams = per_stream.shape[0]
    total = total + net.out_features * head_outputs * streams
    if classifier_hidden is not None:
        total = total + streams * net.out_features * classifier_hidden + classifier_hidden * streams
    return total


def dense_inference_macs(net: GatedNetwork, in_channels: int, head_outputs: int, paper: bool = False) -> int:
    """MACs per sample of the ungated network with one head (``paper``: convolutions only, see above)."""
    if paper:
        return net.dense_macs(in_channels, paper=True)
    return net.dense_macs(in_channels) + net.out_features * head_outputs


def sparsity_loss(gates: Sequence[torch.Tensor]) -> torch.Tensor:
    """Eq. 5 without lambda_s: (1/L) sum_l ||G^l||_1 / c_out^l, averaged over samples (and streams)."""
    return sum(g.mean() for g in gates) / len(gates)


__all__ = ["GATE_BIAS", "GATE_HIDDEN", "GateBank", "GatedBasicBlock", "GatedKernels", "GatedLayer", "GatedLayers",
           "GatedNetwork", "GatedResNet", "GatedSimpleCNN", "GatingModule", "StreamBatchNorm", "dense_inference_macs",
           "gate", "inference_macs", "set_gate_noise", "sparsity_loss"]
