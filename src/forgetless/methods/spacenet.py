"""SpaceNet (Sokar et al., Neurocomputing 2021), its Static-SparseNN baseline and SpaceNet-Rehearsal.

Every task gets its own sparse connections, allocated among a few free neurons of each layer (Alg. 2),
trained with the old tasks' connections frozen while the least important ones are dropped and regrown
between important neurons after every epoch (Alg. 3); the most important neurons are then reserved for
the task (Alg. 4). The single output layer is shared by every class; while a task is learned, the old
tasks' output weights are set aside, and they are restored for inference (Alg. 1, lines 14-15).

The building blocks are in :mod:`forgetless.nn.sparse`; docs/spacenet.md lists every default with its
source and the readings chosen where the paper is silent.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..benchmarks.base import BenchmarkInfo, Split, Task, union
from ..config import option
from ..distributed import all_reduce_gradients
from ..errors import ConfigError
from ..memory.buffer import BufferSize, EpisodicBuffer, buffer_capacity
from ..nn.backbones import feature_width
from ..nn.sparse import SparseConv2d, SparseNetwork
from ..nn.surgery import LAYER_TYPES, layer_sources, qualified_names
from ..training import Context, TrainConfig, config_optimizer, label_mask, masked_logits
from .base import Method, register

SUPPORTED_BACKBONES = ("mlp", "zenke-cnn", "simple-cnn")


@dataclass
class SparseCLConfig(TrainConfig):
    """Sec. 5.1 (split MNIST MLP) defaults; :meth:`SparseCL.defaults` swaps in Sec. 5.3 for CIFAR-10/100."""

    epochs: int = 4
    batch_size: int = 128
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.0  # released code: plain SGD
    # sel_l: neurons picked from the free list of each hidden layer per task (None: every free one)
    selected: tuple[int, ...] | None = option((80, 80), ge=1, source="Sec. 5.1")
    # spec_l: neurons reserved for the task in each hidden layer after training it
    specific: tuple[int, ...] = option((40, 40), ge=0, source="Sec. 5.1")
    # connections allocated per task in each sparse layer (kernels for convolutions); the released code's
    # 10000 / 1640 / 80 for the 784-400-400-10 MLP (2.45% of its weights per task)
    connections: tuple[int, ...] | None = option((10000, 1640, 80), ge=0, source="released code")
    # used when connections is None: per task, this fraction of each layer's weights (Sec. 5.3: 12%)
    density: float | None = option(None, gt=0, le=1)
    set_aside_output: bool = True  # old output weights removed while a new task is learned (Alg. 1)
    # cross-entropy over every output unit, as the released code (unseen classes sit at their zero
    # weights and frozen bias), or over the classes seen so far
    loss_over: Literal["all", "seen"] = "all"

    def validate(self) -> None:
        super().validate()
        if self.connections is None and self.density is None:
            raise ConfigError("set connections (per layer) or density (fraction of each layer per task)")


@dataclass
class SpaceNetConfig(SparseCLConfig):
    # r of Alg. 3 (released code: replace_percentage = 0.2)
    rewire_fraction: float = option(0.2, ge=0, lt=1, source="released code: replace_percentage")
    rewire_output: bool = False  # the released code rewires the hidden layers only
    # Alg. 3 read literally also rewires after the last epoch (the grown connections then stay zero);
    # the released code stops one epoch earlier
    rewire_last_epoch: bool = False


@dataclass
class SpaceNetRehearsalConfig(SpaceNetConfig):
    # "the old tasks data are repeated during learning new tasks": each task trains on its own data plus
    # every stored sample of the old tasks ("all" keeps all of them; an int caps the buffer at C/t per task);
    # it needs old data: at least one sample (spacenet is the method without any)
    buffer_size: BufferSize = option("all", ge=1)
    # not given for this experiment; lr 0.01 for 4 epochs leaves even dense joint training below the
    # paper's 95.08, so the rate of the paper's other SGD setting (Sec. 5.3) is used (docs/spacenet.md)
    lr: float = 0.1
    # with old data replayed, the old output weights stay in place (frozen) so that the new classes are
    # learned against them; True sets them aside as plain SpaceNet does
    set_aside_output: bool = False


def _cnn_defaults() -> dict[str, Any]:
    """Sec. 5.3: Zenke et al.'s CNN, SGD lr 0.1, 20 epochs, 12% of the weights per task, every feature map
    selected, spec = [2, 2, 5, 6, 30]."""
    return {"backbone": "zenke-cnn", "epochs": 20, "lr": 0.1, "selected": None, "specific": (2, 2, 5, 6, 30),
            "connections": None, "density": 0.12}


class SparseCL(Method):
    """Shared machinery: a sparse network grown task by task (Alg. 1), without the rewiring."""

    Config: ClassVar[type] = SparseCLConfig
    scenarios: ClassVar[tuple[str, ...]] = ("class", "task")
    adaptive: ClassVar[bool] = False  # drop/grow after every epoch (Alg. 3)

    def __init__(self, info: BenchmarkInfo, config: Any = None, backbone=None) -> None:
        super().__init__(info, config, backbone)
        cfg = self.config
        name = cfg.backbone or info.default_backbone
        if not self.user_backbone and name not in SUPPORTED_BACKBONES:
            raise ConfigError(f"{self.name or type(self).__name__} needs a feed-forward backbone without "
                              f"normalisation; got {name!r}, valid: {', '.join(SUPPORTED_BACKBONES)}")
        dense = self.make_backbone()
        if self.user_backbone:
            self._check_chain(dense)
        self.net = SparseNetwork(dense, feature_width(dense, info.input_shape), info.n_outputs)
        self._check_lengths()
        self.history: list[dict[str, Any]] = []
        self.heatmaps: list[torch.Tensor] = []  # Fig. 6: first-layer connections per input pixel, per task
        self.figures: list[str] = []

    @classmethod
    def defaults(cls, info: BenchmarkInfo) -> dict[str, Any]:
        return {} if info.default_backbone == "mlp" else _cnn_defaults()

    def _check_chain(self, dense: nn.Module) -> None:
        """A user's network must be a chain of its Linear/Conv2d layers, in registration order: SpaceNet's
        neurons are the outputs of one layer and the inputs of the next (Alg. 2 allocates each task's
        connections between the free neurons of consecutive layers; Alg. 4 reserves them). A skip connection
        makes a channel the sum of two layers' neurons, which the paper's allocation does not define, so it is
        refused with the layer named rather than guessed."""
        who = self.name or type(self).__name__
        names = qualified_names(dense)
        for m in dense.modules():
            if isinstance(m, nn.modules.batchnorm._NormBase | nn.GroupNorm | nn.LayerNorm):
                raise ConfigError(f"{who}: normalisation layer {names[id(m)]!r} ({type(m).__name__}) would mix the "
                                  f"tasks through shared statistics; use a network without normalisation layers")
        layers = [m for m in dense.modules() if isinstance(m, LAYER_TYPES)]
        if not layers:
            raise ConfigError(f"{who} found no Linear/Conv2d layer in the backbone")
        sources = layer_sources(dense, layers, torch.zeros(2, *self.info.input_shape))
        for i, src in enumerate(sources):
            want = [None] if i == 0 else [i - 1]
            if src != want:
                got = ", ".join("the network's input" if j is None else repr(names[id(layers[j])]) for j in src)
                expected = "the network's input" if i == 0 else repr(names[id(layers[i - 1])])
                raise ConfigError(f"{who}: layer {names[id(layers[i])]!r} reads {got}, not only {expected}: SpaceNet "
                                  f"allocates connections between consecutive layers of a feed-forward chain, which a "
                                  f"skip connection or a reordered layer breaks; use a feed-forward network")

    def _check_lengths(self) -> None:
        cfg, net = self.config, self.net
        hidden, n_layers = net.n_hidden, len(net.layers)
        for key in ("selected", "specific"):
            value = getattr(cfg, key)
            if value is not None and len(value) not in (1, hidden):
                raise ConfigError(f"{key} needs one value per hidden layer ({hidden}) or a single value, got {value}")
        if cfg.connections is not None and len(cfg.connections) != n_layers:
            raise ConfigError(f"connections needs one count per sparse layer ({n_layers}: "
                              f"{net.dense_connections(weights=False)} possible), got {cfg.connections}; "
                              f"or set connections=none and density=FRACTION")

    def _per_hidden(self, value) -> list:
        hidden = self.net.n_hidden
        if value is None:
            return [None] * hidden
        return list(value) * hidden if len(value) == 1 else list(value)

    def connection_counts(self) -> list[int]:
        cfg = self.config
        if cfg.connections is not None:
            return list(cfg.connections)
        return [round(cfg.density * n) for n in self.net.dense_connections(weights=False)]

    # ------------------------------------------------------------------------------------ training
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def predict(self, x: torch.Tensor, task_id: int | None = None) -> torch.Tensor:
        return self.net(x)

    def loss(self, logits: torch.Tensor, y: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        return F.cross_entropy(logits if keep is None else masked_logits(logits, keep), y)

    def training_split(self, task: Task, ctx: Context) -> Split:
        """What a task trains on (SpaceNet-Rehearsal adds the stored old data)."""
        return task.train

    def after_task(self, task: Task, ctx: Context) -> None:
        pass

    def learn(self, task: Task, ctx: Context) -> None:
        cfg, net, t = self.config, self.net, ctx.task_index
        self.train()
        placed = net.allocate_task(t, task.labels, self._per_hidden(cfg.selected), self.connection_counts(),
                                   ctx.generator)
        keep = None if cfg.loss_over == "all" else label_mask(self.info.active_labels(t), self.info.n_outputs,
                                                              ctx.device)
        optimizer = config_optimizer(net.parameters(), cfg)
        layers = net.layers
        rewired = []
        show_old_outputs = not cfg.set_aside_output
        for batch in ctx.batches(self.training_split(task, ctx), cfg.batch_size, epochs=cfg.epochs,
                                 iterations=cfg.iterations):
            loss = self.loss(net(batch.x, show_old_outputs=show_old_outputs), batch.y, keep)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if ctx.world_size > 1:
                all_reduce_gradients(net.parameters(), batch.share)
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            before = [layer.values.detach().clone() for layer in layers]  # the task's units only: cheap
            optimizer.step()
            with torch.no_grad():
                for layer, old in zip(layers, before, strict=True):
                    layer.accumulate_importance(old)
            if ctx.should_log(batch):
                ctx.log(step=batch.step, epoch=batch.epoch, loss=loss)
            # Alg. 3: rewire after every epoch but the last (as the released code: the last epoch's new
            # connections would stay untrained), or after every one with rewire_last_epoch
            last = batch.step == batch.total - 1
            if self.adaptive and batch.last_in_epoch and (not last or cfg.rewire_last_epoch):
                # Free this step's graph first: while it lives, autograd keeps each layer's gradient
                # accumulator with the old number of units, and rewiring can change that number (a layer
                # whose candidate positions are all taken grows fewer units than it drops).
                del loss
                with torch.no_grad():
                    changes = net.rewire(cfg.rewire_fraction, ctx.generator, cfg.rewire_output)
                for layer in layers:  # the task's units changed: momentum / Adam moments restart
                    optimizer.state.pop(layer.values, None)
                rewired.append([(d, g) for d, g, _ in changes])
        with torch.no_grad():
            reserved = net.reserve(self._per_hidden(cfg.specific), ctx.generator)
            net.end_task()
        self.after_task(task, ctx)
        self._record(t, placed, reserved, rewired, ctx)

    # ------------------------------------------------------------------------------------ reports
    def _record(self, t: int, placed: list[int], reserved: list[torch.Tensor], rewired, ctx: Context) -> None:
        net = self.net
        per_layer = net.connections(t)
        entry = {
            "task": t,
            "connections_per_layer": per_layer,
            "connections": sum(per_layer),
            "kernels_per_layer": net.connections(t, weights=False),
            "allocated_per_layer": placed,
            "reserved_per_layer": [int(m.sum()) for m in reserved],
            "free_neurons_per_layer": net.free_counts(),
            "rewired_per_epoch": [[list(p) for p in epoch] for epoch in rewired],
        }
        self.history.append(entry)
        heat = self._heatmap(t)
        if heat is not None:
            self.heatmaps.append(heat)
            if ctx.out_dir is not None:
                self.figures = save_heatmaps(self.heatmaps, Path(ctx.out_dir) / f"{self.name or 'sparse'}-connections")
        total, dense = sum(net.connections()), sum(net.dense_connections())
        ctx.log(event="connections", task_connections=entry["connections"], total_connections=total,
                fraction_of_dense=total / dense, free_neurons=entry["free_neurons_per_layer"])
        if ctx.progress:
            print(f"[{self.name}] task {t + 1}: {entry['connections']} connections, total {total} "
                  f"({100 * total / dense:.2f}% of {dense} dense), free neurons {entry['free_neurons_per_layer']}",
                  file=sys.stderr)

    def _heatmap(self, t: int) -> torch.Tensor | None:
        """Number of the task's first-layer connections leaving each input pixel, as an H x W image."""
        shape = self.info.input_shape
        if isinstance(self.net.layers[0], SparseConv2d) or len(shape) < 2:
            return None
        counts = self.net.input_connections(t).cpu()
        return counts.view(*shape).reshape(-1, shape[-2], shape[-1]).sum(0)

    def report(self) -> dict[str, Any]:
        net = self.net
        total, dense = net.connections(), net.dense_connections()
        return {
            "connections_per_task": [h["connections"] for h in self.history],
            "connections_total": sum(total),
            "connections_total_per_layer": total,
            "dense_connections": sum(dense),
            "dense_connections_per_layer": dense,
            "fraction_of_dense": sum(total) / sum(dense),
            "free_neurons_after_task": [h["free_neurons_per_layer"] for h in self.history],
            "tasks": self.history,
            "heatmap_files": self.figures,
        }

    def storage(self) -> dict[str, Any]:
        net = self.net
        weights = sum(net.connections())
        biases = sum(layer.out_units for layer in net.layers if layer.bias is not None)
        return {
            "model_bytes": 4 * (weights + biases),  # float32 values of the existing connections and biases
            # one task id per unit position (int16): the per-task connection masks, the saved output layer
            "mask_bytes": sum(layer.owner.numel() * layer.owner.element_size() for layer in net.layers),
            "connections": weights,
            "dense_connections": sum(net.dense_connections()),
        }

    def macs_per_sample(self, x: torch.Tensor, task_id: int | None = None) -> int:
        """Inference MACs of the sparse network: one per connection and output position."""
        sizes: list[int] = []
        hooks = [layer.register_forward_hook(lambda m, i, o: sizes.append(o[0, 0].numel()))
                 for layer in self.net.layers]
        try:
            with torch.no_grad():
                self.net(x[:1])
        finally:
            for h in hooks:
                h.remove()
        return int(sum(n * positions for n, positions in zip(self.net.connections(), sizes, strict=True)))


def save_heatmaps(maps: list[torch.Tensor], stem: Path) -> list[str]:
    """One PNG per task (``stem-task-K.png``) and all tasks side by side (``stem.png``), as Fig. 6."""
    from ..plots import _pyplot

    plt = _pyplot()
    stem.parent.mkdir(parents=True, exist_ok=True)
    vmax = max(float(m.max()) for m in maps) or 1.0
    paths = []
    for k, m in enumerate(maps):
        fig, ax = plt.subplots(figsize=(2.6, 2.6))
        ax.imshow(m.numpy(), cmap="viridis", vmin=0, vmax=vmax)
        ax.set_title(f"task {k + 1}", fontsize=9)
        ax.axis("off")
        path = stem.parent / f"{stem.name}-task-{k + 1}.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        paths.append(str(path))
    fig, axes = plt.subplots(1, len(maps), figsize=(2.2 * len(maps), 2.4), squeeze=False)
    for k, (ax, m) in enumerate(zip(axes[0], maps, strict=True)):
        im = ax.imshow(m.numpy(), cmap="viridis", vmin=0, vmax=vmax)
        ax.set_title(f"task {k + 1}", fontsize=9)
        ax.axis("off")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="connections per input pixel")
    path = stem.with_suffix(".png")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return [*paths, str(path)]


@register("static-sparse", "Static-SparseNN: SpaceNet's allocation and reservation without drop/grow (Sokar 2021)")
class StaticSparse(SparseCL):
    """The paper's Static-SparseNN baseline: the same per-task sparse allocation, neuron reservation and
    output set-aside, trained with fixed connections."""


@register("spacenet", "SpaceNet: per-task sparse connections with adaptive drop/grow (Sokar et al. 2021)")
class SpaceNet(SparseCL):
    """SpaceNet: sparse connections per task among free neurons, adaptive sparse training, neuron reservation."""

    Config: ClassVar[type] = SpaceNetConfig
    adaptive: ClassVar[bool] = True


@register("spacenet-rehearsal", "SpaceNet-Rehearsal: SpaceNet with old tasks' data replayed (Sokar et al. 2021)")
class SpaceNetRehearsal(SpaceNet):
    """SpaceNet trained on each new task together with the stored data of the old ones (shuffled into one
    training set, so every class counts by its sample count); old connections stay frozen."""

    Config: ClassVar[type] = SpaceNetRehearsalConfig

    def __init__(self, info: BenchmarkInfo, config: Any = None, backbone=None) -> None:
        super().__init__(info, config, backbone)
        self.buffer = EpisodicBuffer(buffer_capacity(self.config.buffer_size))

    def training_split(self, task: Task, ctx: Context) -> Split:
        if not len(self.buffer):
            return task.train
        return union([task.train, self.buffer.as_split().to(ctx.device)])

    def after_task(self, task: Task, ctx: Context) -> None:
        self.buffer.add_task(task.train, task.id, ctx.generator)

    def storage(self) -> dict[str, Any]:
        return {**super().storage(), "buffer_bytes": self.buffer.nbytes(), "buffer_samples": len(self.buffer)}
