"""Dynamic Generative Memory (Ostapenko, Puscas, Klein, Jähnichen, Nabi, CVPR 2019): ``dgmw`` and ``dgma``.

An AC-GAN trained with the WGAN-GP objective. The generator (:class:`forgetless.memory.PlasticGenerator`)
learns per-task binary masks on its weights (DGMw) or units (DGMa), never changes what old tasks use and
grows after every task; the discriminator's auxiliary classifier is the class-incremental solver. Task t:

1. (t > 0) a replay set is generated once: N samples of every earlier class (N = the current task's
   average number of training samples per class), from the generator as it is before the task;
2. every step, on a batch of B real samples of task t:
   a. the auxiliary classifier learns the real batch together with B replayed samples per earlier task,
      shuffled and cut into chunks of B, one Adam step per chunk (released code, ``App.train``);
   b. the critic learns real vs fake samples of task t (Wasserstein loss + gradient penalty);
   c. the generator minimises the adversarial loss, the auxiliary cross-entropy of its samples (paper's
      L_G; option ``aux_g``) and ``lambda_RU * S_t/S_free * R^t`` (Eq. 6); gradients of reserved weights
      are blocked (Eq. 5), embedding gradients compensated as in HAT, s annealed by Eqs. 3-4;
3. the masks are binarised, cumulated, and the generator grows (Sec. 3.2).

No real sample of an old class is stored unless ``real_ratio`` r > 0 or ``buffer_size`` K is set (Table 2):
then real samples are kept (K in all, rebalanced over the tasks; or a fraction r of each task's samples)
and at most ``ceil(r N)`` of each class's N replayed samples are real (all stored ones when only K is set),
the rest generated.

Images are brought to the GAN's space: bilinear resize to ``image_size`` (32, as the paper) and [0, 1] ->
[-1, 1]; the benchmark must therefore deliver inputs in [0, 1] (``normalize=false`` for SVHN/CIFAR-10).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..benchmarks.base import Task
from ..config import option
from ..errors import ConfigError
from ..memory import BufferSize, EpisodicBuffer, buffer_capacity, require_unit_interval
from ..memory.acgan import ACDiscriminator, Norm, conditioned_noise
from ..memory.plastic_generator import PlasticGenerator
from ..memory.wgan_gp import critic_loss, generator_loss, gradient_penalty
from ..metrics import module_bytes
from ..nn.masks import nested_anneal, reuse_weight
from ..plots import save_image_grid
from ..training import Context, TrainConfig, label_mask, masked_logits
from .base import Method, register


@dataclass
class DGMConfig(TrainConfig):
    """Defaults: DGMw's MNIST configuration of the released code (``cfg/cfg_mnist_dgmw.yml``) and the paper,
    with a CPU training budget (``iterations``); the paper's budget is ``epochs=101 iterations=none``."""

    epochs: int = 101  # released cfg: niter 101
    iterations: int | None = 300  # CPU budget per task (one class of MNIST); None: epochs
    batch_size: int = 64  # released cfg: batchSize 64
    lr: float = 0.002  # generator (released cfg: lr_G)
    lr_d: float = option(0.002, gt=0, source="released cfg: lr_D")  # discriminator
    beta1: float = option(0.5, ge=0, lt=1, source="released cfg")  # Adam beta1, beta2 0.999
    grad_clip: float | None = 10000.0  # generator's gradient-norm clip (released code: clipgrad)
    nz: int = option(128, ge=1)  # noise size; its first n_outputs entries carry the one-hot label
    # generator width: 4 ngf, 2 ngf, ngf channels (released cfg; Table 3's 5.58e4 parameters)
    ngf: int = option(6, ge=1, source="released cfg")
    ndf: int = option(32, ge=1, source="released cfg")  # discriminator width
    # critic normalisation: batch (released code; real and fake pass jointly), layer, none
    d_norm: Norm = option("batch", source="released code")
    s_max: float = option(1e4, gt=1, source="released cfg: smax_g")
    lambda_ru: float = option(0.08, ge=0, source="released cfg: lamb_G")
    gp_weight: float = option(1.0, ge=0, source="released cfg: lambda_wasserstein")
    # Eq. 4's local annealing (DGMw in the paper): off in the CPU-budget default (its per-epoch restarts leave a
    # 300-step task ~45 steps after the last restart; docs/dgm.md), on in configs/dgm-table1.yaml
    local_anneal: bool = False
    aux_g: bool = True  # generator's auxiliary loss (paper's L_G; the released MNIST cfg sets aux_G false)
    reinit_d: bool = True  # a fresh discriminator for every task (released cfg: reinit_D)
    image_size: int = option(32, ge=8, source="paper")  # paper: all images resized to 32 x 32
    real_ratio: float = option(0.0, ge=0, le=1, source="Table 2")  # Table 2's r
    buffer_size: BufferSize = option(0, ge=0)  # Table 2's K (0: no real samples stored unless real_ratio > 0)
    replay_per_class: int | None = option(None, ge=1)  # None: the paper's N (average per class of the current task)
    grid_per_class: int = 8  # samples per class in the PNG grid written after each task

    def validate(self) -> None:
        super().validate()
        if self.image_size % 8:
            raise ConfigError(f"image_size must be a multiple of 8 (>= 8), got {self.image_size}")
        if self.image_size != 32:
            raise ConfigError("image_size: the DCGAN generator of the paper produces 32 x 32 images; valid: 32")


@dataclass
class DGMaConfig(DGMConfig):
    """DGMa: the released ``cfg/cfg_mnist_dgma.yml`` (ngf 20: Table 3's 44% of MeRGAN; smax 1e5; lamb_G 0.01)."""

    ngf: int = 20
    s_max: float = 1e5
    lambda_ru: float = 0.01
    local_anneal: bool = False  # Sec. 3.1: "DGMa only features global annealing of s"


class DGM(Method):
    """Shared DGM machinery; subclasses choose the mask granularity."""

    mode = "weight"
    scenarios = ("class", "task")

    def __init__(self, info, config=None, backbone=None) -> None:
        super().__init__(info, config, backbone)
        if self.user_backbone:
            raise ConfigError(f"{self.name} does not take a user's network: it needs a generator (where its masks "
                              f"attach) and a discriminator/classifier pair, not one feature extractor; it uses the "
                              f"paper's DCGANs (ngf, ndf)")
        shape = info.input_shape
        if len(shape) != 3:
            raise ConfigError(f"{self.name} needs image inputs (channels, height, width), got shape {shape}")
        if info.n_outputs > self.config.nz:
            raise ConfigError(f"nz={self.config.nz} must be >= the number of labels ({info.n_outputs})")
        self.channels = int(shape[0])
        self.generator = PlasticGenerator(self.mode, self.config.nz, self.config.ngf, self.channels)
        self.discriminator = self._new_discriminator()
        # with only r set (buffer_size 0) every task keeps the fraction r of its samples: no cap
        capacity = None if self.config.buffer_size == 0 else buffer_capacity(self.config.buffer_size)
        self.buffer = EpisodicBuffer(capacity) if self._stores_real() else None
        self.label_task: dict[int, int] = {}  # global label -> generator task
        self.seen: list[int] = []
        self.initial_size = self.generator.n_params()

    def _stores_real(self) -> bool:
        return self.config.buffer_size != 0 or self.config.real_ratio > 0

    def _new_discriminator(self) -> ACDiscriminator:
        return ACDiscriminator(self.channels, self.info.n_outputs, self.config.ndf, self.config.image_size,
                               self.config.d_norm)

    # ----------------------------------------------------------------------------------------- inputs
    def to_gan(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] images -> the GAN's [-1, 1] images of ``image_size``."""
        size = self.config.image_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return x * 2 - 1

    # ----------------------------------------------------------------------------------------- predict
    def predict(self, x: torch.Tensor, task_id: int | None = None) -> torch.Tensor:
        self.discriminator.eval()
        with torch.no_grad():
            return self.discriminator(self.to_gan(x))[1]

    @torch.no_grad()
    def generate(self, labels: torch.Tensor, noise: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Samples (GAN space, [-1, 1]) of the given learned labels, in eval mode, batched per label."""
        was_training = self.generator.training
        self.generator.eval()
        z = conditioned_noise(labels, self.config.nz, self.info.n_outputs, generator, noise)
        out = torch.empty(len(labels), self.channels, self.config.image_size, self.config.image_size)
        for label in labels.unique().tolist():
            if label not in self.label_task:
                raise ValueError(f"label {label} has not been learned")
            idx = torch.nonzero(labels == label).flatten()
            for chunk in idx.split(512):
                out[chunk] = self.generator(z[chunk], self.label_task[label])
        self.generator.train(was_training)
        return out

    # ------------------------------------------------------------------------------------------ learn
    def learn(self, task: Task, ctx: Context) -> None:
        cfg = self.config
        labels = [int(c) for c in task.labels]
        per_class = max(1, round(len(task.train) / max(len(labels), 1)))
        previous = list(self.seen)
        replay = self._replay_set(previous, cfg.replay_per_class or per_class, ctx) if previous else None
        n_past_tasks = len(set(self.label_task.values()))

        t = self.generator.begin_task(ctx.generator)
        for c in labels:
            self.label_task[c] = t
        self.seen = sorted(set(self.seen) | set(labels))
        keep = label_mask(self.seen, self.info.n_outputs)
        if cfg.reinit_d or t == 0:
            self.discriminator = self._new_discriminator()
        d, g = self.discriminator, self.generator
        d.train()
        g.train()
        betas = (cfg.beta1, 0.999)
        opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr_d, betas=betas)
        g_params = g.trainable_parameters()
        opt_g = torch.optim.Adam(g_params, lr=cfg.lr, betas=betas)
        reg_weight = reuse_weight(cfg.lambda_ru, g.n_units(), g.initial_units)

        require_unit_interval(task.train, self.name, why="generates with a tanh output rescaled from [0, 1]")
        for batch in ctx.batches(task.train, cfg.batch_size, epochs=cfg.epochs, iterations=cfg.iterations):
            x, y = self.to_gan(batch.x), batch.y
            n = len(y)
            s, s_cycle = nested_anneal(cfg.s_max, batch.step, batch.total, batch.per_epoch, cfg.local_anneal)

            # (a) auxiliary classifier: real samples of this task + replayed samples of the earlier ones
            cls_x, cls_y = x, y
            if replay is not None:
                pick = torch.randint(len(replay[1]), (n * n_past_tasks,), generator=ctx.generator)
                order = torch.randperm(n * (n_past_tasks + 1), generator=ctx.generator)
                cls_x = torch.cat([x, replay[0][pick]])[order]
                cls_y = torch.cat([y, replay[1][pick]])[order]
            for cx, cy in zip(cls_x.split(n), cls_y.split(n), strict=True):
                loss_c = F.cross_entropy(masked_logits(d(cx)[1], keep), cy)
                opt_d.zero_grad(set_to_none=True)
                loss_c.backward()
                opt_d.step()

            # (b) critic on real vs fake samples of this task
            fake = g(conditioned_noise(y, cfg.nz, self.info.n_outputs, ctx.generator), t, s)
            real_score, fake_score = self._scores(x, fake.detach())
            loss_d = critic_loss(real_score, fake_score)
            penalty = gradient_penalty(d.score, x, fake, weight=cfg.gp_weight)
            opt_d.zero_grad(set_to_none=True)
            (loss_d + penalty).backward()
            opt_d.step()

            # (c) generator
            fake = g(conditioned_noise(y, cfg.nz, self.info.n_outputs, ctx.generator), t, s)
            score, logits = self._fake_outputs(x, fake)
            reg = g.regularizer(s)
            loss_g = generator_loss(score) + reg_weight * reg
            aux = F.cross_entropy(masked_logits(logits, keep), y)
            if cfg.aux_g:
                loss_g = loss_g + aux
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            g.block_gradients()
            g.compensate(s, s_cycle)
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(g_params, cfg.grad_clip)
            opt_g.step()

            if ctx.should_log(batch):
                ctx.log(step=batch.step, s=s, loss_cls=loss_c, loss_critic=loss_d, penalty=penalty,
                        loss_g=loss_g, aux_g=aux, reg=reg)

        record = g.end_task(cfg.s_max, ctx.generator)
        ctx.log(**{f"growth_{k}": v for k, v in record.items() if not isinstance(v, list)})
        if ctx.progress:
            print(f"{self.name} task {t + 1}: generator {record['params_before']:,} -> {record['params']:,} params, "
                  f"units {record['units']}, reserved {record['newly_reserved']:,} new + {record['reused']:,} reused",
                  file=sys.stderr)
        if self.buffer is not None:
            kept = task.train
            if self.config.buffer_size == 0:  # only r: keep the fraction r of the task's samples
                n_keep = math.ceil(self.config.real_ratio * len(task.train))
                kept = task.train.subset(torch.randperm(len(task.train), generator=ctx.generator)[:n_keep])
            self.buffer.add_task(kept, t, ctx.generator)
        if ctx.out_dir is not None:
            save_sample_grid(self, Path(ctx.out_dir) / "samples" / f"after-task-{t + 1}.png")

    def _scores(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Critic scores; with batch norm, real and fake pass as one batch (shared statistics), otherwise the
        normalisation removes what tells a whole fake batch apart (e.g. its background level)."""
        if self.config.d_norm == "batch":
            scores = self.discriminator.score(torch.cat([real, fake]))
            return scores[: len(real)], scores[len(real):]
        return self.discriminator.score(real), self.discriminator.score(fake)

    def _fake_outputs(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.config.d_norm == "batch":
            score, logits = self.discriminator(torch.cat([real, fake]))
            return score[len(real):], logits[len(real):]
        return self.discriminator(fake)

    def _replay_set(self, labels: list[int], n: int, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
        """N samples per earlier class: stored real ones (Table 2 variants) and generated ones."""
        reals: dict[int, torch.Tensor] = {}
        if self.buffer is not None and len(self.buffer):
            stored = self.buffer.as_split()
            xs, ys = self.to_gan(stored.inputs()), stored.y
            limit = math.ceil(self.config.real_ratio * n) if self.config.real_ratio > 0 else n
            for c in labels:
                reals[c] = xs[ys == c][:limit]
        out_x, out_y = [], []
        for c in labels:
            real = reals.get(c, torch.empty(0, self.channels, self.config.image_size, self.config.image_size))
            n_gen = n - len(real)
            wanted = torch.full((n_gen,), c, dtype=torch.long)
            out_x += [real, self.generate(wanted, generator=ctx.generator)]
            out_y += [torch.full((len(real),), c, dtype=torch.long), wanted]
        return torch.cat(out_x), torch.cat(out_y)

    # ---------------------------------------------------------------------------------------- reports
    def storage(self) -> dict[str, Any]:
        g = self.generator.storage_bytes(sparse=True)
        dense = self.generator.storage_bytes(sparse=False)["masks"]
        out = {
            "generator_params_initial": self.initial_size,  # Table 3 (masked layers)
            "generator_params": self.generator.n_params(),
            "generator_weight_bytes": g["weights"],
            "generator_task_layer_bytes": g["task_layers"],
            "mask_bytes": g["masks"],
            "mask_bytes_dense": dense,
            "generator_bytes": g["weights"] + g["task_layers"] + g["masks"],
            "classifier_bytes": module_bytes(self.discriminator),
        }
        if self.buffer is not None:
            out["buffer_samples"] = len(self.buffer)
        return out

    def report(self) -> dict[str, Any]:
        g = self.generator
        growth = [self.initial_size] + [h["params"] for h in g.history]
        return {
            "generator_size_initial": self.initial_size,
            "generator_size_final": g.n_params(),
            "generator_size_per_task": growth,
            "generator_units_per_task": [list(w) for w in g.task_widths] + [list(g.widths)],
            "free_capacity": g.free(),
            "growth": g.history,
            # Fig. 4's worst case: every task reserves the whole free capacity (units grow by the initial width)
            "linear_growth_units": [g.initial_units * (t + 1) for t in range(len(g.history) + 1)],
        }


@register("dgmw", "Dynamic Generative Memory, binary masks on every generator weight (Ostapenko et al. 2019)")
class DGMw(DGM):
    Config = DGMConfig
    mode = "weight"


@register("dgma", "Dynamic Generative Memory, binary masks on every generator unit (Ostapenko et al. 2019)")
class DGMa(DGM):
    Config = DGMaConfig
    mode = "unit"


def save_sample_grid(method: DGM, path: Path, per_class: int | None = None, seed: int = 0) -> Path:
    """A PNG grid: one row per learned label (in label order), ``per_class`` samples from fixed noise."""
    k = per_class or method.config.grid_per_class
    labels = torch.tensor(sorted(method.label_task), dtype=torch.long).repeat_interleave(k)
    images = (method.generate(labels, generator=torch.Generator().manual_seed(seed)) + 1) / 2
    return save_image_grid(images.view(len(labels) // k, k, *images.shape[1:]), path)
