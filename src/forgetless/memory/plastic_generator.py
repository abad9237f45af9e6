"""DGM's generator (Ostapenko et al., 2019): a DCGAN generator whose weights (DGMw) or units (DGMa) carry
per-task binary masks learned as ``sigmoid(s e)``, which grows after every task so that its free capacity
stays constant (Sec. 3.2), and which keeps generating every old task exactly as before.

Architecture (released code ``SAP-archive/machine-learning-dgm``, ``networks/net_DGMw.py``/``net_DGMa.py``):
z (nz x 1 x 1, the label one-hot in its first entries) -> ConvTranspose 4x4/1 (4 ngf channels, 4x4) ->
4x4/2 (2 ngf, 8x8) -> 4x4/2 (ngf, 16x16) -> a per-task output layer 4x4/2 (image channels, 32x32) -> tanh;
each hidden layer is followed by a per-task batch norm and ReLU; no biases. The three hidden layers are
masked and grow; the output layer and the batch norms belong to one task each.

Per task t the generator remembers the widths it had (``task_widths[t]``) and the binary masks it learned
(``task_masks[t]``, thresholded at 0.5 at s = s_max); task t generates with ``W[:in_t, :out_t]`` masked by
them, its own batch norm (running statistics, eval mode) and its own output layer. The weights it uses are
reserved (the cumulated mask) and receive no gradient afterwards (Eq. 5), and nothing added later is
reachable from it, so its output for a fixed z is bit-identical after any later task.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..nn.masks import SigmoidMask, block_gradients_, sparsity_regularizer, unit_weight_mask
from .acgan import dcgan_init_

MODES = ("weight", "unit")
UNIT_MASK_AT = ("conv_output", "activation")
KERNEL = 4
STRIDES = (1, 2, 2)
PADDINGS = (0, 1, 1)


def _normal(shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(shape, generator=generator) * 0.02  # DCGAN initialisation


class PlasticGenerator(nn.Module):
    """``mode="weight"`` (DGMw: a mask entry per weight) or ``"unit"`` (DGMa: per output channel).

    ``unit_mask_at`` (DGMa): ``"conv_output"`` masks a layer's convolution output before its batch norm (the
    released code; Eq. 1's ``(m o W)^T x`` with the mask expanded over W's columns). A masked unit then outputs
    the constant ReLU(BN(0)) of its task, not 0, so a weight out of it is not safe to change either: every
    weight *into* a reserved unit is frozen (HAT's ``min(pre, post)`` would let later tasks shift what old
    tasks generate). ``"activation"`` masks after batch norm and ReLU (a masked unit is exactly 0, so HAT's
    ``min(pre, post)`` rule is exact).

    Life cycle per task: :meth:`begin_task` (new batch norms, output layer and zero mask embeddings:
    masks 0.5), training steps (``forward(z, task, s)``, :meth:`regularizer`, :meth:`block_gradients`,
    :meth:`compensate`), :meth:`end_task` (binary masks, cumulated mask, growth).
    """

    def __init__(self, mode: Literal["weight", "unit"], nz: int = 128, ngf: int = 6, channels: int = 1,
                 generator: torch.Generator | None = None,
                 unit_mask_at: Literal["conv_output", "activation"] = "activation") -> None:
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"generator mask mode {mode!r} is not valid; valid: {', '.join(MODES)}")
        if unit_mask_at not in UNIT_MASK_AT:
            raise ConfigError(f"unit_mask_at {unit_mask_at!r} is not valid; valid: {', '.join(UNIT_MASK_AT)}")
        if nz < 1 or ngf < 1:
            raise ConfigError(f"nz and ngf must be >= 1, got nz={nz}, ngf={ngf}")
        self.mode = mode
        self.unit_mask_at = unit_mask_at
        self.nz = nz
        self.channels = channels
        widths = (4 * ngf, 2 * ngf, ngf)
        ins = (nz, *widths[:-1])
        self.weights = nn.ParameterList(
            [nn.Parameter(_normal((i, o, KERNEL, KERNEL), generator)) for i, o in zip(ins, widths, strict=True)])
        self.norms = nn.ModuleList()  # per task: its three batch norms
        self.heads = nn.ModuleList()  # per task: its output layer
        self.task_widths: list[tuple[int, ...]] = []
        self.task_masks: list[list[torch.Tensor]] = []  # per task, per layer: bool
        self.cumulated = [torch.zeros(self._mask_shape(k)) for k in range(3)]  # 0/1 floats
        self.embeddings: nn.ModuleList | None = None  # the task being learned: one SigmoidMask per layer
        self.current: int | None = None
        self._factors: list[torch.Tensor] = []
        self.initial_units = sum(widths)
        self.initial_params = self.n_params()
        self.history: list[dict] = []

    # ------------------------------------------------------------------------------------------- sizes
    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(int(w.shape[1]) for w in self.weights)

    def n_params(self) -> int:
        """Parameters of the masked ("base") network: Table 3's size."""
        return sum(w.numel() for w in self.weights)

    def n_units(self) -> int:
        return sum(self.widths)

    def free(self) -> int:
        """Free (not reserved) weights (DGMw) or units (DGMa)."""
        return int(sum((1 - c).sum().item() for c in self.cumulated))

    def _mask_shape(self, k: int) -> tuple[int, ...]:
        w = self.weights[k]
        return tuple(w.shape) if self.mode == "weight" else (int(w.shape[1]),)

    @property
    def n_tasks(self) -> int:
        return len(self.task_widths)

    # --------------------------------------------------------------------------------------- generation
    def masks(self, task: int, s: float | None = None) -> list[torch.Tensor]:
        """Task ``task``'s masks: ``sigmoid(s e)`` while it is learned, its binary masks afterwards."""
        if task == self.current and self.embeddings is not None:
            if s is None:
                raise ValueError("the task being learned needs the scale s")
            return [emb(0, s) for emb in self.embeddings]
        return [m.float() for m in self.task_masks[task]]

    def forward(self, z: torch.Tensor, task: int, s: float | None = None) -> torch.Tensor:
        if not 0 <= task < self.n_tasks:
            raise ValueError(f"task {task} not learned (generator has {self.n_tasks} tasks)")
        widths = self.task_widths[task]
        ins = (self.nz, *widths[:-1])
        masks = self.masks(task, s)
        x = z.reshape(z.shape[0], self.nz, 1, 1)
        for k in range(3):
            w = self.weights[k][: ins[k], : widths[k]]
            if self.mode == "weight":
                w = w * masks[k]
            x = F.conv_transpose2d(x, w, stride=STRIDES[k], padding=PADDINGS[k])
            unit = masks[k].view(1, -1, 1, 1) if self.mode == "unit" else None
            if unit is not None and self.unit_mask_at == "conv_output":
                x = x * unit
            x = F.relu(self.norms[task][k](x))
            if unit is not None and self.unit_mask_at == "activation":
                x = x * unit
        return torch.tanh(self.heads[task](x))

    # ----------------------------------------------------------------------------------------- training
    def begin_task(self, generator: torch.Generator | None = None) -> int:
        if self.current is not None:
            raise RuntimeError(f"task {self.current} is still being learned")
        t = self.n_tasks
        widths = self.widths
        self.task_widths.append(widths)
        norms = nn.ModuleList(nn.BatchNorm2d(w) for w in widths)
        head = nn.ConvTranspose2d(widths[-1], self.channels, KERNEL, 2, 1, bias=False)
        dcgan_init_(norms)
        with torch.no_grad():
            head.weight.copy_(_normal(tuple(head.weight.shape), generator))
        self.norms.append(norms)
        self.heads.append(head)
        self.embeddings = nn.ModuleList(SigmoidMask(1, self._mask_shape(k), init="zeros") for k in range(3))
        self.current = t
        self._factors = self._gradient_factors()
        return t

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the current task may change: the shared weights (gradients blocked where reserved), its mask
        embeddings, batch norms and output layer. Old tasks' own parts are never handed to an optimiser."""
        if self.current is None or self.embeddings is None:
            raise RuntimeError("no task is being learned")
        return [*self.weights, *self.embeddings.parameters(), *self.norms[self.current].parameters(),
                *self.heads[self.current].parameters()]

    def current_masks(self, s: float) -> list[torch.Tensor]:
        if self.embeddings is None:
            raise RuntimeError("no task is being learned")
        return [emb(0, s) for emb in self.embeddings]

    def regularizer(self, s: float) -> torch.Tensor:
        """Eq. 6: the current masks' mean over what is still free (reusing reserved entries costs nothing)."""
        return sparsity_regularizer(self.current_masks(s), [c.to(self.weights[0].device) for c in self.cumulated])

    def _gradient_factors(self) -> list[torch.Tensor]:
        if self.mode == "weight":
            return [1 - c for c in self.cumulated]
        factors = []
        for k, w in enumerate(self.weights):
            # conv_output: a masked input unit is not 0 for its old tasks, so weights into reserved units freeze
            pre = self.cumulated[k - 1] if k > 0 and self.unit_mask_at == "activation" else None
            # unit_weight_mask works on (out, in, ...) layouts; a transposed convolution's weight is (in, out, ...)
            shape = (w.shape[1], w.shape[0], *w.shape[2:])
            factors.append(1 - unit_weight_mask(self.cumulated[k], pre, shape).transpose(0, 1).contiguous())
        return factors

    def block_gradients(self) -> None:
        """Eq. 5: gradients of reserved weights multiplied by 0 (1 - cumulated mask)."""
        block_gradients_(zip(self.weights, [f.to(w.device) for f, w in zip(self._factors, self.weights,
                                                                               strict=True)], strict=True))

    def compensate(self, s: float, s_max: float) -> None:
        if self.embeddings is not None:
            for emb in self.embeddings:
                emb.compensate_(s, s_max)

    @torch.no_grad()
    def end_task(self, s_max: float, generator: torch.Generator | None = None) -> dict:
        """Binarise the task's masks at s_max (threshold 0.5), cumulate them, grow the network; returns the
        task's growth record (also appended to ``history``)."""
        if self.current is None or self.embeddings is None:
            raise RuntimeError("no task is being learned")
        t = self.current
        masks = [(emb.mask(0, s_max) >= 0.5).cpu() for emb in self.embeddings]
        before = [c > 0 for c in self.cumulated]
        reused = sum(int((m & b).sum()) for m, b in zip(masks, before, strict=True))
        used = sum(int(m.sum()) for m in masks)
        new_reserved = [int((m & ~b).sum()) for m, b in zip(masks, before, strict=True)]
        self.task_masks.append(masks)
        self.cumulated = [torch.maximum(c, m.float()) for c, m in zip(self.cumulated, masks, strict=True)]
        self.embeddings = None
        self.current = None
        self._factors = []
        size_before = self.n_params()
        added = self._grow(new_reserved, generator)
        record = {"task": t + 1, "used": used, "reused": reused, "newly_reserved": sum(new_reserved),
                  "newly_reserved_per_layer": new_reserved, "added_units": added, "params_before": size_before,
                  "params": self.n_params(), "units": list(self.widths), "free": self.free()}
        self.history.append(record)
        return record

    def _grow(self, reserved: list[int], generator: torch.Generator | None) -> list[int]:
        """Sec. 3.2. DGMa: each layer gets as many new units as it reserved. DGMw: a layer that reserved
        delta weights gets ceil((delta - a) / (n k^2)) new output channels, n its (grown) input width and a
        the free weights its input growth already added (a = new inputs x outputs x k^2; released code,
        ``netG.extand``), so its free weights stay >= what it started with."""
        added, grown_in = [], 0
        for k, w in enumerate(self.weights):
            fan_in, fan_out = int(w.shape[0]), int(w.shape[1])
            area = KERNEL * KERNEL
            if self.mode == "unit":
                extra = reserved[k]
            else:
                already = grown_in * fan_out * area
                extra = max(0, math.ceil((reserved[k] - already) / ((fan_in + grown_in) * area)))
            new = _normal((fan_in + grown_in, fan_out + extra, KERNEL, KERNEL), generator).to(w.device)
            new[:fan_in, :fan_out] = w.data
            self.weights[k] = nn.Parameter(new)
            c = self.cumulated[k]
            if self.mode == "weight":
                self.cumulated[k] = F.pad(c, (0, 0, 0, 0, 0, extra, 0, grown_in))
            else:
                self.cumulated[k] = F.pad(c, (0, extra))
            added.append(extra)
            grown_in = extra
        return added

    # ------------------------------------------------------------------------------------------ storage
    def storage_bytes(self, sparse: bool = True) -> dict[str, int]:
        """Bytes to keep the generator: 32-bit weights (masked layers; per task its batch norms with running
        statistics and its output layer) and the binary masks, as 1 bit per entry or, ``sparse`` (Table 4),
        the smaller of that and a 32-bit index per one."""
        weights = 4 * self.n_params()
        own = 4 * sum(p.numel() for p in [*self.norms.parameters(), *self.heads.parameters()])
        own += 4 * sum(b.numel() for n in self.norms for b in n.buffers() if b.dtype.is_floating_point)
        masks = 0
        for task_masks in self.task_masks:
            for m in task_masks:
                dense = math.ceil(m.numel() / 8)
                masks += min(dense, 4 * int(m.sum())) if sparse else dense
        return {"weights": weights, "task_layers": own, "masks": masks}
