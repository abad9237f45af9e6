"""Memories of past tasks: episodic buffers and generative models (VAE, WGAN-GP pieces)."""

from .buffer import BufferSize, EpisodicBuffer, buffer_capacity
from .vae import VAE, Decoder, Encoder, reparameterize, require_unit_interval, vae_loss
from .wgan_gp import critic_loss, generator_loss, gradient_penalty

__all__ = ["VAE", "BufferSize", "Decoder", "Encoder", "EpisodicBuffer", "buffer_capacity", "critic_loss",
           "generator_loss", "gradient_penalty", "reparameterize", "require_unit_interval", "vae_loss"]
