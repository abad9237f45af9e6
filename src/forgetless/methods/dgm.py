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

import copy
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from ..benchmarks.base import Task
from ..benchmarks.transforms import RandomAffine
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
from ..training.selection import BestOnValidation
from .base import Method, register

# "budget" mask schedule: a mask embedding pushed the same way at every step reaches s * e = MASK_REACH by the
# end of the task (s ramped per step to s_max, Adam steps of mask_lr = MASK_REACH / (s_max * steps)): it passes
# s * e ~ 17, where float32's sigmoid gradient vanishes, at ~40% of the task; less consistently pushed ones later
MASK_REACH = 100.0


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
    # Mask schedule (issue 23; docs/dgm.md, "Masks within a short budget"). "budget": Eq. 3's s_max^i ramps per
    # step over the task's steps and the mask embeddings take Adam steps of mask_lr, so masks stay soft and
    # keep changing for most of the task; "epochs": Eqs. 3-4 over data epochs, embeddings at the generator's
    # lr (the paper read literally; configs/dgm-table1.yaml, the paper's budget, sets it). "budget" is the
    # default since it was measured with the two extensions below over 10 tasks and 3 seeds (docs/dgm.md)
    mask_schedule: Literal["budget", "epochs"] = option("budget", source="Eq. 3 (paper); budget: docs/dgm.md")
    mask_lr: float | None = option(None, gt=0)  # None: MASK_REACH / (s_max * steps) ("budget"), lr ("epochs")
    # Diagnostics: every select_every steps the run's (real) val and test accuracy of every class seen so far is
    # probed (at most probe_per_class each) for the released code's selection and the checkpoint average in
    # report.selection; they read old classes' real data, so they only measure, never choose (0: off)
    select_every: int = option(20, ge=0, source="released code: every 2 epochs (DGMw), 5 (DGMa)")
    probe_per_class: int | None = option(300, ge=1)
    # Extensions (not in the paper; they touch only the classifier that predicts, never the generator or the
    # critic; all three on by default, measured over seeds 0-2 in docs/dgm.md; classifier_ema=0
    # pseudo_selection=false consolidation_steps=0 is the paper's classifier):
    # Polyak average of the discriminator (decay; 0 off) ...
    classifier_ema: float = option(0.99, ge=0, lt=1, source="extension (issue 23)")
    # ... classifier-only steps at the end of each task on generated old classes + real current ones, at
    # consolidation_lr (None: lr_d / 10), every image randomly shifted (pixels of the 32 x 32 input) and rotated
    # (degrees), so that the classifier does not learn the generated samples' few poses only ...
    consolidation_steps: int = option(100, ge=0, source="extension (issue 23)")
    consolidation_lr: float | None = option(None, gt=0, source="extension (issue 23)")
    consolidation_shift: float = option(2.0, ge=0, source="extension (issue 23)")
    consolidation_rotation: float = option(10.0, ge=0, le=180, source="extension (issue 23)")
    # ... and selection every select_every steps on held-out generated old classes + the current val split
    pseudo_selection: bool = option(True, source="extension (issue 23)")
    pseudo_val_per_class: int = option(300, ge=1)

    def validate(self) -> None:
        super().validate()
        if self.mask_schedule == "budget" and self.local_anneal:
            raise ConfigError("local_anneal (Eq. 4 within data epochs) needs mask_schedule=epochs")
        if self.pseudo_selection and self.select_every == 0:
            raise ConfigError("pseudo_selection needs select_every >= 1 (the steps between evaluated checkpoints)")
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
    # where a unit's mask acts: conv_output (before batch norm: the released code, Eq. 1) or activation (after
    # batch norm and ReLU); in the CPU budget conv_output loses the generator by task 3 with either mask
    # schedule (docs/dgm.md, "DGMa: the unit mask before batch norm")
    mask_at: Literal["conv_output", "activation"] = option("activation", source="docs/dgm.md")


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
        self.generator = self._new_generator()
        self.discriminator = self._new_discriminator()
        # with only r set (buffer_size 0) every task keeps the fraction r of its samples: no cap
        capacity = None if self.config.buffer_size == 0 else buffer_capacity(self.config.buffer_size)
        self.buffer = EpisodicBuffer(capacity) if self._stores_real() else None
        self.label_task: dict[int, int] = {}  # global label -> generator task
        self.seen: list[int] = []
        self.initial_size = self.generator.n_params()
        self.classifier: ACDiscriminator | None = None  # what predicts when an extension made one
        self.selection: list[dict[str, Any]] = []  # per task: the probed curve and the three A_t readings

    def _stores_real(self) -> bool:
        return self.config.buffer_size != 0 or self.config.real_ratio > 0

    def _new_generator(self, **options: Any) -> PlasticGenerator:
        return PlasticGenerator(self.mode, self.config.nz, self.config.ngf, self.channels, **options)

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
        solver = self.classifier if self.classifier is not None else self.discriminator
        solver.eval()
        with torch.no_grad():
            return solver(self.to_gan(x))[1]

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
        # the extensions draw from their own stream, so ctx.generator (and with it the generator) is unchanged
        own = torch.Generator().manual_seed(ctx.generator.initial_seed() ^ 0x5EED)
        pseudo_val = (self._pseudo_val(previous, task, own) if cfg.pseudo_selection and previous else None)
        self.classifier = None  # the probes below measure the discriminator being trained

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
        total = self._steps(len(task.train), ctx)
        mask_lr = cfg.mask_lr or (MASK_REACH / (cfg.s_max * total) if cfg.mask_schedule == "budget" else None)
        if mask_lr is None:
            opt_g = torch.optim.Adam(g_params, lr=cfg.lr, betas=betas)
        else:
            emb = {id(p) for p in g.embeddings.parameters()}
            opt_g = torch.optim.Adam([{"params": [p for p in g_params if id(p) not in emb]},
                                      {"params": [p for p in g_params if id(p) in emb], "lr": mask_lr}],
                                     lr=cfg.lr, betas=betas)
        reg_weight = reuse_weight(cfg.lambda_ru, g.n_units(), g.initial_units)
        ema = copy.deepcopy(d) if cfg.classifier_ema > 0 else None
        candidate = ema if ema is not None else d  # what pseudo-selection and consolidation start from
        best = BestOnValidation({"classifier": candidate}) if pseudo_val is not None else None
        curve: list[list[float]] = []

        require_unit_interval(task.train, self.name, why="generates with a tanh output rescaled from [0, 1]")
        for batch in ctx.batches(task.train, cfg.batch_size, epochs=cfg.epochs, iterations=cfg.iterations):
            x, y = self.to_gan(batch.x), batch.y
            per_cycle = 1 if cfg.mask_schedule == "budget" else batch.per_epoch  # "budget": Eq. 3 per step
            s, s_cycle = nested_anneal(cfg.s_max, batch.step, batch.total, per_cycle, cfg.local_anneal)

            # (a) auxiliary classifier: real samples of this task + replayed samples of the earlier ones
            loss_c = self._classifier_steps(d, opt_d, x, y, replay, n_past_tasks, keep, ctx.generator)

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

            if ema is not None:
                _polyak_(ema, d, min(cfg.classifier_ema, (1 + batch.step) / (10 + batch.step)))
            if cfg.select_every and ((batch.step + 1) % cfg.select_every == 0 or batch.step == batch.total - 1):
                if ctx.probe is not None:
                    curve.append(self._probe(batch.step, ctx))
                if best is not None and pseudo_val is not None:
                    best.update(-self._balanced_accuracy(candidate, *pseudo_val))
                d.train()
                g.train()
            if ctx.should_log(batch):
                with torch.no_grad():
                    m = torch.cat([v.flatten() for v in g.current_masks(s)])
                # Fig. 3(b)'s quantities: density = share of mask entries >= 0.5, sharpness = mean |m - 0.5|
                ctx.log(step=batch.step, s=s, loss_cls=loss_c, loss_critic=loss_d, penalty=penalty,
                        loss_g=loss_g, aux_g=aux, reg=reg, mask_density=(m >= 0.5).float().mean(),
                        mask_mean=m.mean(), mask_sharpness=(m - 0.5).abs().mean())

        stages = self._finish_classifier(candidate, best, task, replay, n_past_tasks, keep, own, ctx)
        if curve:
            self.selection.append({**_readings(t + 1, curve), **stages})
            ctx.log(event="selection", **{k: v for k, v in self.selection[-1].items() if k != "curve"})
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

    def _steps(self, n: int, ctx: Context) -> int:
        """The task's optimiser steps, as ``Context.batches`` counts them."""
        cfg = self.config
        per_epoch = max(1, math.ceil(math.ceil(n / cfg.batch_size) / ctx.world_size))
        return cfg.iterations if cfg.iterations else cfg.epochs * per_epoch

    def _classifier_steps(self, d: ACDiscriminator, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                          replay: tuple[torch.Tensor, torch.Tensor] | None, n_past: int, keep: torch.Tensor,
                          gen: torch.Generator, augment=None) -> torch.Tensor:
        """The real batch + B replayed samples per earlier task, shuffled, one Adam step per chunk of B
        (``augment``: a transform of the whole mixed batch)."""
        n = len(y)
        cls_x, cls_y = x, y
        if replay is not None:
            pick = torch.randint(len(replay[1]), (n * n_past,), generator=gen)
            order = torch.randperm(n * (n_past + 1), generator=gen)
            cls_x = torch.cat([x, replay[0][pick]])[order]
            cls_y = torch.cat([y, replay[1][pick]])[order]
        if augment is not None:
            cls_x = augment(cls_x)
        for cx, cy in zip(cls_x.split(n), cls_y.split(n), strict=True):
            loss = F.cross_entropy(masked_logits(d(cx)[1], keep), cy)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return loss

    def _probe(self, step: int, ctx: Context) -> list[float]:
        """[steps done, test A_t, val A_t] of the discriminator being trained (real data of every seen class:
        a measurement, see ``select_every``), also logged so that ``forgetless plot`` draws it."""
        assert ctx.probe is not None
        k = self.config.probe_per_class
        test, val = ctx.probe("test", k), ctx.probe("val", k)
        a_test, a_val = sum(test) / len(test), sum(val) / len(val)
        ctx.log(step=step, probe_test_acc=a_test, probe_val_acc=a_val)
        return [step + 1, a_test, a_val]

    def _pseudo_val(self, previous: list[int], task: Task, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Held-out generated samples of the earlier classes (from the generator before the task) and the
        current task's real validation split, in GAN space."""
        k = self.config.pseudo_val_per_class
        wanted = torch.tensor(previous, dtype=torch.long).repeat_interleave(k)
        xs, ys = [self.generate(wanted, generator=gen)], [wanted]
        if len(task.val):
            xs.append(self.to_gan(task.val.inputs()))
            ys.append(task.val.y.cpu())
        return torch.cat(xs), torch.cat(ys)

    @torch.no_grad()
    def _balanced_accuracy(self, model: ACDiscriminator, x: torch.Tensor, y: torch.Tensor) -> float:
        """Mean over the classes in ``y`` of the accuracy of ``model``'s argmax over the labels seen so far."""
        was = model.training
        model.eval()
        keep = label_mask(self.seen, self.info.n_outputs)
        pred = torch.cat([masked_logits(model(c)[1], keep).argmax(1) for c in x.split(1000)])
        model.train(was)
        return sum(float((pred[y == c] == c).float().mean()) for c in y.unique()) / len(y.unique())

    def _finish_classifier(self, candidate: ACDiscriminator, best: BestOnValidation | None, task: Task,
                           replay: tuple[torch.Tensor, torch.Tensor] | None, n_past: int, keep: torch.Tensor,
                           gen: torch.Generator, ctx: Context) -> dict[str, float]:
        """The extensions' classifier (None without them): the Polyak average or the discriminator, at the
        pseudo-validation's best checkpoint, then ``consolidation_steps`` classifier-only steps; on a copy, so
        the discriminator (critic) stays as trained. With probes, returns the test A_t after each stage
        (``A_ema``, ``A_pseudo_selected``, ``A_classifier``: what the run reports)."""
        cfg = self.config
        stages: dict[str, float] = {}
        if cfg.classifier_ema == 0 and best is None and cfg.consolidation_steps == 0:
            return stages

        def probe(name: str, model: ACDiscriminator) -> None:
            if ctx.probe is not None and cfg.select_every:
                self.classifier = model
                test = ctx.probe("test", cfg.probe_per_class)
                stages[name] = sum(test) / len(test)
                self.classifier = None

        if cfg.classifier_ema:
            probe("A_ema", candidate)
        live = copy.deepcopy(candidate.state_dict())
        if best is not None:
            best.restore()
        clf = copy.deepcopy(candidate)
        candidate.load_state_dict(live)
        if best is not None:
            probe("A_pseudo_selected", clf)
        if cfg.consolidation_steps and replay is not None:
            clf.train()
            opt = torch.optim.Adam(clf.parameters(), lr=cfg.consolidation_lr or cfg.lr_d / 10, betas=(cfg.beta1, 0.999))
            augment = RandomAffine(cfg.consolidation_shift, cfg.consolidation_rotation, fill=-1.0)  # GAN background
            for _ in range(cfg.consolidation_steps):
                idx = torch.randint(len(task.train), (cfg.batch_size,), generator=gen).to(task.train.device)
                x, y = task.train.batch(idx, True, gen)
                self._classifier_steps(clf, opt, self.to_gan(x), y, replay, n_past, keep, gen,
                                       augment=lambda v: augment(v, True, gen))
        clf.eval()
        probe("A_classifier", clf)
        self.classifier = clf
        self.discriminator.train()
        self.generator.train()
        return stages

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
            # per task (select_every > 0, run through the runner): last-step (probe subsample), checkpoint-averaged
            # and released-code-selected A_t of the discriminator; the last uses old classes' real val data
            "selection": self.selection,
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

    def _new_generator(self, **options: Any) -> PlasticGenerator:
        return super()._new_generator(unit_mask_at=self.config.mask_at, **options)


@torch.no_grad()
def _polyak_(average: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """average <- decay * average + (1 - decay) * model, parameters and floating buffers (batch-norm
    statistics) alike; integer buffers are copied."""
    for a, p in zip(average.parameters(), model.parameters(), strict=True):
        a.lerp_(p, 1 - decay)
    for a, b in zip(average.buffers(), model.buffers(), strict=True):
        if a.dtype.is_floating_point:
            a.lerp_(b, 1 - decay)
        else:
            a.copy_(b)


def _readings(task: int, curve: list[list[float]]) -> dict[str, Any]:
    """The three A_t of one task from its probed [steps, test, val] checkpoints: the last one, their mean,
    and the test A_t where val A_t (real data of every seen class, the released code's criterion) is best."""
    best = max(range(len(curve)), key=lambda i: curve[i][2])  # first of equal maxima, as a strict '>' would keep
    return {"task": task, "A_last": curve[-1][1], "A_averaged": sum(c[1] for c in curve) / len(curve),
            "A_released_selected": curve[best][1], "selected_step": int(curve[best][0]),
            "curve": [[int(c[0]), c[1], c[2]] for c in curve]}


def save_sample_grid(method: DGM, path: Path, per_class: int | None = None, seed: int = 0) -> Path:
    """A PNG grid: one row per learned label (in label order), ``per_class`` samples from fixed noise."""
    k = per_class or method.config.grid_per_class
    labels = torch.tensor(sorted(method.label_task), dtype=torch.long).repeat_interleave(k)
    images = (method.generate(labels, generator=torch.Generator().manual_seed(seed)) + 1) / 2
    return save_image_grid(images.view(len(labels) // k, k, *images.shape[1:]), path)
