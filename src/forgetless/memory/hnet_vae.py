"""A VAE replay memory whose decoder is protected by a task-conditioned hypernetwork (von Oswald et al.,
2020, Appendix B; the replay model of HNET+TIR and HNET+R).

The encoder is a plain :class:`~forgetless.memory.vae.Encoder` trained on each task as it comes (it is only
needed while learning). The decoder is an unmodified :class:`~forgetless.memory.vae.Decoder` run with weights
generated from the task's embedding (``TargetNetwork``), so it is protected by the output regularizer of
Eq. 2 instead of by replaying its own samples. The decoder input is the latent code concatenated with a
fixed per-task condition vector: a draw from N(0, I) (Appendix C: "a sample from a standard multivariate
normal of dimension 100 ... constant throughout the experiment and not learned") or a one-hot code.

The objective is the VAE loss of Appendix B (binary cross-entropy in pixel space + analytic KL), averaged
over pixels as in the authors' code and van de Ven & Tolias' (the scale matters next to beta).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..benchmarks.base import Split
from ..errors import ConfigError
from ..nn.hnet import OutputRegularizer, TargetNetwork
from ..nn.hnet import build as build_hnet
from .vae import Decoder, Encoder, reparameterize, vae_loss


class HnetVAE(nn.Module):
    """``dec_hidden`` lists the decoder's hidden sizes from its input to its output (the paper's order)."""

    def __init__(self, input_shape: Sequence[int], enc_hidden: Sequence[int] = (400, 400),
                 dec_hidden: Sequence[int] = (250, 350), latent: int = 100, condition_dim: int = 100,
                 condition: str = "gaussian", hnet_hidden: Sequence[int] = (10, 10), chunk_size: int | None = 50000,
                 emb_dim: int = 96, chunk_emb_dim: int = 96, hnet_activation: str = "elu", beta: float = 0.01,
                 lookahead: bool = True, reg_tasks: int | None = None, emb_std: float = 1.0,
                 chunk_emb_std: float = 1.0) -> None:
        super().__init__()
        if condition not in ("gaussian", "onehot"):
            raise ConfigError(f"vae_condition={condition!r} is not valid; valid: gaussian, onehot")
        self.input_shape = tuple(input_shape)
        self.latent = int(latent)
        self.condition = condition
        self.encoder = Encoder(input_shape, enc_hidden, latent)
        # Decoder(hidden) builds its layers from the last hidden size to the first, hence the reversal.
        self.decoder = TargetNetwork(Decoder(input_shape, tuple(reversed(list(dec_hidden))), latent, condition_dim))
        self.hnet = build_hnet(self.decoder.n_weights, emb_dim, hnet_hidden, chunk_size, chunk_emb_dim,
                               hnet_activation, emb_std, chunk_emb_std)
        self.regularizer = OutputRegularizer(beta, lookahead, reg_tasks)
        self.register_buffer("conditions", torch.empty(0, condition_dim))

    @property
    def n_tasks(self) -> int:
        return self.hnet.n_tasks

    def _new_condition(self, generator: torch.Generator | None) -> torch.Tensor:
        dim = self.conditions.shape[1]
        if self.condition == "onehot":
            if self.n_tasks >= dim:
                raise ConfigError(f"one-hot replay conditions allow at most vae_condition_dim={dim} tasks")
            c = torch.zeros(dim)
            c[self.n_tasks] = 1.0
            return c
        return torch.randn(dim, generator=generator)

    def learn_task(self, data: Split, ctx, iterations: int | None, epochs: int, batch_size: int,
                   make_optimizer: Callable[[list, float], torch.optim.Optimizer], lr: float,
                   emb_lr: float | None = None) -> None:
        """Train encoder, decoder hypernetwork and a new task embedding on ``data`` (Eq. 2 with the VAE loss)."""
        t = self.n_tasks
        device = self.conditions.device
        cond = self._new_condition(ctx.generator).to(device)
        self.conditions = torch.cat([self.conditions, cond.unsqueeze(0)])
        emb = self.hnet.add_embedding(ctx.generator)
        self.regularizer.begin_task(self.hnet, range(t))
        self.train()
        opt_enc = make_optimizer(list(self.encoder.parameters()), lr)
        opt_theta = make_optimizer(self.hnet.theta(), lr)
        opt_emb = make_optimizer([emb], emb_lr or lr)
        pixels = math.prod(self.input_shape)
        for batch in ctx.batches(data, batch_size, epochs=epochs, iterations=iterations, desc="replay model"):
            x = batch.x
            mu, logvar = self.encoder(x)
            z = torch.cat([reparameterize(mu, logvar), cond.expand(len(x), -1)], dim=1)
            logits = self.decoder(z, self.hnet(emb, truncate=False))
            loss = vae_loss(logits, x, mu, logvar) / pixels
            for opt in (opt_enc, opt_theta, opt_emb):
                opt.zero_grad(set_to_none=True)
            loss.backward()
            reg = self.regularizer.backward(self.hnet, opt_theta, ctx.generator)
            for opt in (opt_enc, opt_theta, opt_emb):
                opt.step()
            if ctx.should_log(batch):
                ctx.log(step=batch.step, replay_loss=loss.detach(), replay_regularizer=reg)
        self.regularizer.end_task()
        self.hnet.freeze_embeddings()

    @torch.no_grad()
    def sample(self, tasks: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One sample (pixels in [0, 1]) per entry of ``tasks`` (task indices of learned tasks)."""
        device = self.conditions.device
        tasks = tasks.cpu()  # the replay plan is the host's (no device reads per step); samples on the device
        out = torch.empty(len(tasks), *self.input_shape, device=device)
        present = torch.unique(tasks)
        weights = self.hnet(self.hnet.embedding_matrix(present.to(device)), truncate=False)
        for w, t in zip(weights, present.tolist(), strict=True):
            idx = torch.nonzero(tasks == t).flatten().to(device)
            z = torch.randn(len(idx), self.latent, generator=generator).to(device)
            z = torch.cat([z, self.conditions[t].expand(len(idx), -1)], dim=1)
            out[idx] = torch.sigmoid(self.decoder(z, w))
        return out

    def replay(self, n: int, upto: int, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """A replay batch spread evenly over tasks 0..upto-1: ceil(n / upto) samples of each (as the authors),
        returned with their task indices."""
        per_task = math.ceil(n / upto)
        tasks = torch.arange(upto).repeat_interleave(per_task)
        return self.sample(tasks, generator), tasks.to(self.conditions.device)
