"""CCGN: Conditional Channel Gated Networks for task-aware continual learning (Abati et al., CVPR 2020).

Every convolution of the backbone gets, per task, a gating module that picks the output channels to compute
from the layer's input (:mod:`forgetless.nn.gates`). Training task t minimises the class cross-entropy of
head t on stream t, plus, after ``sparsity_patience`` epochs, the sparsity objective (Eq. 5)
``lambda_s / L * sum_l ||G_t^l||_1 / c_out^l``; in class-IL also the task classifier's cross-entropy
(Eq. 3). The best epoch on the current task's validation split is kept (model selection). Then the firing
probability of each gate on the validation split (Eq. 6) decides which kernels are relevant to task t
(probability > ``relevance_threshold``, default 0): those are frozen for the future (and remain the only
kernels task t may open), the others are re-initialised for later tasks. Old tasks' gates, heads and
normalisation never change again, so their predictions stay bit-identical.

Class-IL (Sec. 3.3): all task streams run through the shared layers with their own gates; an MLP (64 ReLU
units) reads the concatenated globally pooled features of all streams and picks the head. It is rehearsed
with task-uniform batches (only the task-level loss sees replayed samples; heads never do):

- ``memory=episodic``: a buffer of ``buffer_size`` real samples (C/t per past task, rebalanced), mixed with
  the current batch so task labels are uniform;
- ``memory=generative``: one WGAN-GP generator per task (Table 9), trained at the START of its task; rehearsal
  batches are all fake, the current task included (supplementary Sec. 2.1).

Defaults: Table 4 of the supplementary (SGD momentum 0.9, weight decay 5e-4, gradient clipping 1; batch 256,
lr 0.01, lambda_s 0.5 for MNIST/SVHN; batch 64, lr 0.1, lambda_s 1 for CIFAR-10/ImageNet-50). The paper's
epochs (400/800/200) and WGAN iterations (2e5) are far beyond a CPU: the defaults here are a CPU budget
(docs/ccgn.md), the paper's values are in src/forgetless/configs/ccgn-*.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..benchmarks.base import BenchmarkInfo, Split, Task
from ..config import option
from ..distributed import all_reduce_gradients
from ..errors import ConfigError, ForgetlessError
from ..memory.buffer import BufferSize, EpisodicBuffer, buffer_capacity
from ..memory.ccgn_generators import TaskGenerator, WGANConfig, per_task_counts
from ..metrics import module_bytes, tensor_bytes
from ..nn.backbones import feature_width
from ..nn.gates import (
    GATE_HIDDEN,
    GatedLayers,
    GatedNetwork,
    KernelInit,
    StreamBatchNorm,
    dense_inference_macs,
    gate,
    inference_macs,
    set_gate_noise,
    sparsity_loss,
)
from ..nn.heads import MultiHead
from ..nn.masks import CCGN_TEMPERATURE, block_gradients_
from ..nn.norm_statistics import cumulative_statistics, fixed_norm_statistics
from ..nn.standardize import InputStandardizer
from ..nn.surgery import LAYER_TYPES, layer_sources
from ..nn.taskwise import TaskBatchNorm, task_specific_norms
from ..plots import save_image_grid
from ..training import Context, TrainConfig, make_optimizer
from ..training.selection import BestOnValidation, mean_loss
from ..training.task_inference import chosen_outputs, most_likely_task
from .base import Method, register


@dataclass
class CCGNConfig(TrainConfig):
    backbone: str | None = "simple-cnn"
    epochs: int = 7  # CPU budget (paper: 400 on MNIST, see docs/ccgn.md)
    # CPU budget: last epochs with noise-free gates, as at test (paper: 0)
    noise_free_epochs: int = option(3, ge=0, source="CPU budget (paper: 0)")
    batch_size: int = 64  # CPU budget: 4x the paper's steps for the same compute (paper: 256 on MNIST)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.05  # CPU budget (paper: 0.01 for 400 epochs, see docs/ccgn.md)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    grad_clip: float | None = 1.0
    lr_decay: tuple[int, ...] = ()  # epochs after which lr /= 10 (Table 4: SVHN [400, 600], CIFAR [100, 150])
    # Table 4 (MNIST/SVHN); reached within the CPU budget through gate_lr_scale
    lambda_s: float = option(0.5, ge=0, source="Table 4")
    sparsity_patience: int = option(2, ge=0)  # epochs without the sparsity loss (paper: 20 of 400 on MNIST)
    relevance_threshold: float = option(0.0, ge=0, lt=1)
    gate_hidden: int = option(GATE_HIDDEN, ge=1, source="Sec. 3.2")
    gate_bias: float = 2.0  # initial bias of the gate logits (not in the paper; CPU budget, docs/ccgn.md)
    # initialisation of the gated kernels (paper: not given; CPU budget, docs/ccgn.md)
    kernel_init: KernelInit = option("kaiming", source="CPU budget (paper: not given)")
    input_norm: Literal["first-task", "none"] = "first-task"  # standardise inputs (paper: not given; docs/ccgn.md)
    # learning rate of the gating modules / lr (paper: 1; CPU budget, docs/ccgn.md)
    gate_lr_scale: float = option(30.0, gt=0, source="CPU budget (paper: 1)")
    temperature: float = option(CCGN_TEMPERATURE, gt=0, source="Sec. 3.2")
    model_selection: bool = True  # keep the epoch with the best validation objective
    recalibrate_norms: bool = True  # re-estimate task t's batch-norm statistics at the end (docs/ccgn.md)
    memory: Literal["none", "episodic", "generative"] = "none"
    buffer_size: BufferSize = option(500, ge=0)
    task_hidden: int = option(64, ge=1)
    # samples per rehearsal batch (None: batch_size; not given in the paper)
    rehearsal_size: int | None = option(None, ge=1)
    task_grad: Literal["backbone", "classifier"] = "backbone"  # where the task loss's gradient may go
    gan_iterations: int = 1000  # CPU budget (paper: 2e5)
    gan_batch_size: int = 64
    gan_lr: float = 1e-4
    gan_betas: tuple[float, float] = (0.5, 0.9)
    gan_critic_steps: int = 5
    gan_gp: float = 10.0
    macs_probe: int = 200  # validation samples per task kept to measure MACs in report() (0: off)
    # generative memory: samples per task generator in samples/after-task-T.png (0: none)
    grid_samples: int = option(8, ge=0)

    def validate(self) -> None:
        super().validate()
        if self.memory == "episodic" and self.buffer_size == 0:
            raise ConfigError("memory=episodic needs buffer_size >= 1 or all")
        if self.memory == "generative" and (self.gan_iterations < 1 or self.gan_critic_steps < 1):
            raise ConfigError("memory=generative needs gan_iterations >= 1 and gan_critic_steps >= 1")


_RESNET_DATA = ("cifar10", "imagenet")


@register("ccgn", "conditional channel gated networks: per-task channel gates, frozen relevant kernels, task "
                  "classifier over all task streams (Abati et al.)")
class CCGN(Method):
    Config: ClassVar[type] = CCGNConfig
    scenarios: ClassVar[tuple[str, ...]] = ("task", "class")

    @classmethod
    def defaults(cls, info: BenchmarkInfo) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if any(name in (info.dataset or info.name) for name in _RESNET_DATA):  # Table 4, CIFAR-10 / ImageNet-50
            out.update(backbone="resnet18", batch_size=64, lr=0.1, lambda_s=1.0, gate_lr_scale=1.0)  # a GPU job
        if info.scenario == "class":
            out["memory"] = "episodic"
        return out

    def __init__(self, info, config=None, backbone=None) -> None:
        super().__init__(info, config, backbone)
        cfg = self.config
        if info.scenario == "class" and cfg.memory == "none":
            raise ConfigError("ccgn in class-IL needs a memory for its task classifier; valid: memory=episodic "
                              "(buffer_size=...), memory=generative")
        name = cfg.backbone or info.default_backbone
        if self.user_backbone:
            # A user's network: every Conv2d/Linear gated in place, its batch norms task-specific (per stream).
            base = self.make_backbone()
            width = feature_width(base, info.input_shape)
            task_specific_norms(base, info.n_tasks, StreamBatchNorm)
            layer_sources(base, [m for m in base.modules() if isinstance(m, LAYER_TYPES)],
                          torch.zeros(2, *info.input_shape))  # refuses a layer called twice per forward
            self.net: GatedNetwork = GatedLayers(base, info.n_tasks, cfg.gate_hidden, cfg.temperature,
                                                 cfg.gate_bias, out_features=width)
        else:
            base = self.make_backbone(**({"task_bn": info.n_tasks} if name.startswith("resnet") else {}))
            try:
                self.net = gate(base, info.n_tasks, cfg.gate_hidden, cfg.temperature, cfg.gate_bias)
            except TypeError as err:
                raise ConfigError(f"ccgn: {err}") from None
        for kernels in self.net.kernels():
            kernels.reinitialize(init=cfg.kernel_init)
        # fitted on the first task's training inputs, then fixed: later tasks must not move old tasks' inputs
        self.input_norm = InputStandardizer(info.input_shape[0])
        width = self.net.out_features
        self.heads = MultiHead(width, info.task_labels, info.n_outputs)
        self.class_il = info.scenario == "class"
        self.task_classifier = nn.Sequential(nn.Linear(info.n_tasks * width, cfg.task_hidden), nn.ReLU(),
                                             nn.Linear(cfg.task_hidden, info.n_tasks)) if self.class_il else None
        self.buffer = EpisodicBuffer(buffer_capacity(cfg.buffer_size)) if cfg.memory == "episodic" else None
        self.generators = nn.ModuleList() if cfg.memory == "generative" else None
        self.transforms: list[Any] = []  # each task's input transform (fake samples become model inputs with it)
        self.relevance: list[list[torch.Tensor]] = []  # per task, per gated layer (Eq. 6)
        self.macs_history: list[dict[str, float]] = []
        self.probes: list[Split] = []
        self.tasks_learned = 0
        # position of each label within its task's head
        position = torch.zeros(info.n_outputs, dtype=torch.long)
        for labels in info.task_labels:
            position[torch.as_tensor(list(labels))] = torch.arange(len(labels))
        self.register_buffer("label_position", position, persistent=False)

    # ------------------------------------------------------------------------------------- forward
    def streams(self, x: torch.Tensor, tasks: list[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.net(self.input_norm(x), tasks)

    def task_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Task classifier on stream features (T, B, C): logits over the T tasks (Eq. 7; streams not yet
        created are zeros, which is the same as a classifier that grows with the tasks)."""
        n_streams, batch, width = features.shape
        flat = features.permute(1, 0, 2).reshape(batch, n_streams * width)
        flat = F.pad(flat, (0, (self.info.n_tasks - n_streams) * width))
        return self.task_classifier(flat)[:, :n_streams]

    def predict(self, x: torch.Tensor, task_id: int | None = None) -> torch.Tensor:
        if task_id is not None:
            features, _ = self.streams(x, [task_id])
            return self.heads(features[0], task_id)
        if not self.class_il:
            raise ForgetlessError("ccgn in task-IL needs the task id at test time")
        tasks = list(range(max(self.tasks_learned, 1)))
        features, _ = self.streams(x, tasks)
        chosen = most_likely_task(self.task_logits(features))
        return chosen_outputs(torch.stack([self.heads(features[t], t) for t in tasks]), chosen)

    @torch.no_grad()
    def infer_task(self, x: torch.Tensor) -> torch.Tensor:
        tasks = list(range(max(self.tasks_learned, 1)))
        features, _ = self.streams(x, tasks)
        return most_likely_task(self.task_logits(features))

    # ------------------------------------------------------------------------------------ training
    def class_loss(self, x: torch.Tensor, y: torch.Tensor, t: int, sparse: bool) -> tuple[torch.Tensor, ...]:
        features, gates = self.streams(x, [t])
        ce = F.cross_entropy(self.heads.heads[t](features[0]), self.label_position[y])
        sparsity = sparsity_loss(gates)
        total = ce + self.config.lambda_s * sparsity if sparse else ce
        return total, ce, sparsity

    def task_loss(self, x: torch.Tensor, tasks: torch.Tensor, t: int) -> torch.Tensor:
        with fixed_norm_statistics(self.net):  # other tasks' samples must not move task t's statistics
            features, _ = self.streams(x, list(range(t + 1)))
        if self.config.task_grad == "classifier":
            features = features.detach()
        return F.cross_entropy(self.task_logits(features), tasks)

    def rehearsal_batch(self, x: torch.Tensor, t: int, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch whose task labels are uniform over tasks 0..t (Sec. 3.3)."""
        n = self.config.rehearsal_size or x.shape[0]
        if self.buffer is not None:
            k = min(int(per_task_counts(n, t + 1, ctx.generator)[t]), x.shape[0])
            xb, _, tb = self.buffer.sample(n - k, ctx.generator, balanced=True, device=x.device)
            xs = torch.cat([x[:k], xb])
            ts = torch.cat([torch.full((k,), t, dtype=torch.long, device=x.device), tb.to(x.device)])
            return xs, ts
        counts = per_task_counts(n, t + 1, ctx.generator)
        xs, ts = [], []
        for j, c in enumerate(counts.tolist()):
            if c:
                fake = self.generators[j].sample(c, ctx.generator, device=x.device)
                xs.append(self.transforms[j](fake, False, None))
                ts.append(torch.full((c,), j, dtype=torch.long, device=x.device))
        return torch.cat(xs), torch.cat(ts)

    def _train_mode(self, t: int) -> None:
        self.train()
        for norm in self.net.modules():
            if isinstance(norm, TaskBatchNorm):
                for j in range(t):
                    norm.slot(j).eval()

    def _trainable(self, t: int) -> list[nn.Parameter]:
        params = [p for n, p in self.net.named_parameters() if p.requires_grad and not self._other_slot(n, t)]
        params += list(self.heads.heads[t].parameters())
        if self.task_classifier is not None and t > 0:
            params += list(self.task_classifier.parameters())
        return params

    @staticmethod
    def _other_slot(name: str, t: int) -> bool:
        # task-specific batch norm: only the current task's slot learns
        parts = name.split(".")
        if "norms" in parts:
            return int(parts[parts.index("norms") + 1]) != t
        return False

    def learn(self, task: Task, ctx: Context) -> None:
        cfg, t = self.config, task.id
        if t != self.tasks_learned:
            raise ForgetlessError(f"ccgn learns tasks in order: expected task {self.tasks_learned}, got {t}")
        self.transforms.append(task.train.transform)
        if t == 0 and cfg.input_norm == "first-task":
            self.input_norm.fit(task.train.inputs())
        if self.generators is not None:
            self.fit_generator(task, ctx)
        params = self._trainable(t)
        optimizer = self.make_optimizer(params, t)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(cfg.lr_decay), 0.1)
        frozen = [(p, rows, p.detach()[rows].clone()) for p, rows in self.net.freeze_rows() if bool(rows.any())]
        best = BestOnValidation({"net": self.net, "head": self.heads.heads[t], "task_classifier": self.task_classifier})
        first_eligible = cfg.sparsity_patience if cfg.sparsity_patience < cfg.epochs else 0
        self._train_mode(t)
        noise_free_from = cfg.epochs - cfg.noise_free_epochs
        for batch in ctx.batches(task.train, cfg.batch_size, epochs=cfg.epochs, iterations=cfg.iterations):
            sparse = batch.epoch >= cfg.sparsity_patience
            set_gate_noise(self.net, batch.epoch < noise_free_from)
            loss, ce, sparsity = self.class_loss(batch.x, batch.y, t, sparse)
            task_ce = None
            if self.class_il and t > 0:
                xr, tr = self.rehearsal_batch(batch.x, t, ctx)
                task_ce = self.task_loss(xr, tr, t)
                loss = loss + task_ce
            self.step(loss, params, frozen, optimizer, batch.share)
            if ctx.should_log(batch):
                ctx.log(step=batch.step, epoch=batch.epoch, loss=ce, sparsity=sparsity,
                        **({"task_loss": task_ce} if task_ce is not None else {}))
            if batch.last_in_epoch:
                scheduler.step()
                if cfg.model_selection and len(task.val) and batch.epoch >= first_eligible:
                    val = self.validation_objective(task, sparse)
                    ctx.log(epoch=batch.epoch, val_objective=val)
                    best.update(val)
                    self._train_mode(t)
        set_gate_noise(self.net, True)
        best.restore()
        if cfg.recalibrate_norms:
            self.recalibrate_norms(task.train, t)
        self.settle(task)
        if self.buffer is not None:
            self.buffer.add_task(task.train, t, ctx.generator)
        self.tasks_learned += 1
        if cfg.macs_probe and len(task.val):
            self.probes.append(task.val.subset(torch.arange(min(cfg.macs_probe, len(task.val)))).to("cpu"))
            self.macs_history.append(self.measure_macs())
        if self.generators is not None and cfg.grid_samples and ctx.out_dir is not None:
            self.save_sample_grid(Path(ctx.out_dir) / "samples" / f"after-task-{t + 1}.png")

    @torch.no_grad()
    def save_sample_grid(self, path: Path, seed: int = 0) -> Path:
        """A PNG with one row per task generator, ``grid_samples`` samples each from fixed noise: what the task
        classifier is rehearsed with (generator artefacts are what it can learn to tell tasks apart by)."""
        k = self.config.grid_samples
        rows = [g.sample(k, torch.Generator().manual_seed(seed)) for g in self.generators]
        return save_image_grid(torch.stack(rows), path)

    def step(self, loss: torch.Tensor, params: list[nn.Parameter],
             frozen: list[tuple[nn.Parameter, torch.Tensor, torch.Tensor]], optimizer: torch.optim.Optimizer,
             share: float = 1.0) -> None:
        """One optimiser step on ``loss`` that leaves the kernels frozen for earlier tasks (``frozen``: parameter,
        rows, saved values) exactly as they were. Their gradients are zeroed before clipping: they are never
        applied, and counted in the norm they would shrink the clipped step of the kernels that do learn.
        ``share``: this rank's fraction of the global batch when data-parallel."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        all_reduce_gradients(params, share)
        block_gradients_((p, (~rows).to(p.dtype).view(-1, *(1,) * (p.dim() - 1))) for p, rows, _ in frozen)
        if self.config.grad_clip:
            nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        optimizer.step()
        with torch.no_grad():  # momentum and weight decay would still move them
            for p, rows, saved in frozen:
                p[rows] = saved

    def make_optimizer(self, params: list[nn.Parameter], t: int) -> torch.optim.Optimizer:
        """Table 4's optimiser over ``params``; task t's gating modules learn at ``gate_lr_scale`` x lr."""
        cfg = self.config
        gating = {id(p) for bank in self.net.banks for p in bank.modules_[t].parameters()}
        optimizer = make_optimizer([p for p in params if id(p) not in gating], cfg.optimizer, cfg.lr,
                                     cfg.momentum, cfg.weight_decay, fused=True)
        optimizer.add_param_group({"params": [p for p in params if id(p) in gating], "lr": cfg.lr * cfg.gate_lr_scale})
        return optimizer

    def fit_generator(self, task: Task, ctx: Context) -> None:
        cfg = self.config
        generator = TaskGenerator(self.info.input_shape).to(ctx.device)
        x = task.train.x
        images = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
        wgan = WGANConfig(cfg.gan_iterations, cfg.gan_batch_size, cfg.gan_lr, tuple(cfg.gan_betas),
                          cfg.gan_critic_steps, cfg.gan_gp)
        generator.fit(images.to(ctx.device), wgan, ctx.generator, log=ctx.log)
        generator.requires_grad_(False)
        self.generators.append(generator)

    @torch.no_grad()
    def validation_objective(self, task: Task, sparse: bool) -> float:
        """Class cross-entropy (+ sparsity once active) on the current task's validation split: model selection
        uses no example of past tasks (Sec. 4.1)."""
        self.eval()
        return mean_loss(task.val, lambda x, y: self.class_loss(x, y, task.id, sparse)[0])

    @torch.no_grad()
    def recalibrate_norms(self, split: Split, t: int) -> None:
        """Re-estimate the running statistics of task t's batch norms (its gating modules and, in a ResNet, its
        task-BN slot) with one pass over ``split`` at the final weights and with test-time gates: running averages
        taken while the weights moved (the sparsity phase moves the gates fast) misplace the test-time
        thresholds ``logit > 0``."""
        norms = [bank.modules_[t].bn for bank in self.net.banks]
        norms += [n.slot(t) for n in self.net.modules() if isinstance(n, TaskBatchNorm)]
        self.eval()
        set_gate_noise(self.net, False)
        with cumulative_statistics(norms):
            for norm in norms:
                norm.train()
            for bank in self.net.banks:  # gates as at test; only the batch norms gather statistics
                bank.modules_[t].fc1.eval()
            for x, _ in split.batches(self.config.batch_size):
                self.streams(x, [t])
        set_gate_noise(self.net, True)
        self.eval()

    @torch.no_grad()
    def firing_probability(self, split: Split, t: int) -> list[torch.Tensor]:
        """Eq. 6: per gated layer, the fraction of ``split``'s samples for which each of task t's gates opens
        (deterministic gates, as at test time)."""
        self.eval()
        sums: list[torch.Tensor] | None = None
        n = 0
        for x, _ in split.batches(1000):
            _, gates = self.streams(x, [t])
            batch_sums = [g[0].sum(0) for g in gates]
            sums = batch_sums if sums is None else [a + b for a, b in zip(sums, batch_sums, strict=True)]
            n += x.shape[0]
        return [s / max(n, 1) for s in sums]

    @torch.no_grad()
    def settle(self, task: Task) -> None:
        """Relevance on the validation split (the training split if there is none); freeze the relevant kernels
        and task t's gates, head and normalisation; re-initialise the kernels still free."""
        t = task.id
        relevance = self.firing_probability(task.val if len(task.val) else task.train, t)
        for bank, kernels, r in zip(self.net.banks, self.net.kernels(), relevance, strict=True):
            free = bank.settle(t, r, self.config.relevance_threshold)
            kernels.reinitialize(free, self.config.kernel_init)
        self.relevance.append([r.cpu() for r in relevance])
        self.heads.heads[t].requires_grad_(False)
        for norm in self.net.modules():
            if isinstance(norm, TaskBatchNorm):
                norm.slot(t).requires_grad_(False)

    # ---------------------------------------------------------------------------------------- MACs
    @torch.no_grad()
    def effective_macs(self, x: torch.Tensor, task_id: int | None, paper: bool = False) -> torch.Tensor:
        """Inference MACs per sample (B,) counting only open channels: task-IL (one stream) or class-IL (every
        stream, plus the task classifier). ``paper``: convolutions only, input channels not counted (the
        convention behind the paper's Table 3, docs/ccgn.md)."""
        self.eval()
        tasks = [task_id] if task_id is not None else list(range(max(self.tasks_learned, 1)))
        _, gates = self.streams(x, tasks)
        classifier = self.config.task_hidden if task_id is None and self.task_classifier is not None else None
        return inference_macs(self.net, gates, self.info.input_shape[0], self.head_outputs(), classifier, paper)

    def head_outputs(self) -> int:
        return max(len(self.info.task_labels[0]), 1)

    def backbone_macs(self, paper: bool = False) -> int:
        return dense_inference_macs(self.net, self.info.input_shape[0], self.head_outputs(), paper)

    def macs_per_sample(self, x: torch.Tensor, task_id: int | None = None) -> int:
        return round(float(self.effective_macs(x, task_id).mean()))

    def measure_macs(self) -> dict[str, float]:
        """Average MACs over the probes of every task seen so far (Table 3's 'up to T_i'): task-IL (each task's
        samples on its own stream) and class-IL (all streams)."""
        sums = {"task_il": 0.0, "task_il_paper_convention": 0.0, "class_il": 0.0, "class_il_paper_convention": 0.0}
        n = 0
        for j, probe in enumerate(self.probes):
            x = probe.inputs()
            sums["task_il"] += float(self.effective_macs(x, j).sum())
            sums["task_il_paper_convention"] += float(self.effective_macs(x, j, paper=True).sum())
            if self.class_il:
                sums["class_il"] += float(self.effective_macs(x, None).sum())
                sums["class_il_paper_convention"] += float(self.effective_macs(x, None, paper=True).sum())
            n += len(probe)
        out: dict[str, float] = {"after_task": self.tasks_learned}
        out.update({k: v / max(n, 1) for k, v in sums.items() if self.class_il or not k.startswith("class")})
        out["backbone"] = float(self.backbone_macs())
        out["backbone_paper_convention"] = float(self.backbone_macs(paper=True))
        return out

    # ----------------------------------------------------------------------------------- reporting
    def storage(self) -> dict[str, Any]:
        model = module_bytes(self.net) + module_bytes(self.heads)
        if self.task_classifier is not None:
            model += module_bytes(self.task_classifier)
        out: dict[str, Any] = {"model_bytes": model}
        if self.buffer is not None:
            out["buffer_bytes"] = self.buffer.nbytes()
            out["buffer_samples"] = len(self.buffer)
        if self.generators is not None:
            out["generator_bytes"] = sum(4 * g.n_parameters() for g in self.generators)  # float32, Sec. 4.5
        out["frozen_kernels"] = int(sum(int(b.frozen.sum()) for b in self.net.banks))
        out["kernels"] = int(sum(b.out_channels for b in self.net.banks))
        out["probe_bytes_not_memory"] = tensor_bytes([p.x for p in self.probes])
        # Table 3 (MACs, not bytes) here so reproduction configs can read them as storage.<key>
        for record in self.macs_history:
            i = record["after_task"]
            out[f"macs_task_il_{i}"] = round(record["task_il"])
            out[f"macs_task_il_paper_{i}"] = round(record["task_il_paper_convention"])
            if "class_il" in record:
                out[f"macs_class_il_{i}"] = round(record["class_il"])
                out[f"macs_class_il_paper_{i}"] = round(record["class_il_paper_convention"])
            out["macs_backbone"] = round(record["backbone"])
            out["macs_backbone_paper"] = round(record["backbone_paper_convention"])
        return out

    def report(self) -> dict[str, Any]:
        """Per task and gated layer the kernels it may open (relevance > threshold), the frozen fraction per
        layer, and MACs after each task (Table 3)."""
        kernels = {str(t): [round(float(b.allowed[t].float().mean()), 4) for b in self.net.banks]
                   for t in range(self.tasks_learned)}
        out: dict[str, Any] = {
            "kernels_used": kernels,
            "frozen_fraction": [round(float(b.frozen.float().mean()), 4) for b in self.net.banks],
            "backbone_macs": self.backbone_macs() if self.net_has_spatial() else None,
            "macs_after_task": self.macs_history,
        }
        if self.generators is not None:
            out["generator_parameters"] = [g.n_parameters() for g in self.generators]
        return out

    def net_has_spatial(self) -> bool:
        try:
            self.backbone_macs()
        except (ValueError, TypeError):
            return False
        return True
