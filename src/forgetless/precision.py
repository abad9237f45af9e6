"""Mixed precision (``--amp bf16``): torch's autocast around a task's training and the evaluations.

Autocast runs matrix products and convolutions in bfloat16 and keeps parameters, gradients, optimiser
state, reductions and everything a method computes elementwise (masks, gates, Fisher/importance, pruning
and drop/grow scores) in float32. bfloat16 has float32's exponent range, so no loss scaling is needed.

What bfloat16 cannot give is float32's mantissa (8 bits: a relative rounding of 2^-9). Where a method's
guarantee is a small difference between two outputs, that part runs in float32 (:func:`float32`: the
hypernetwork's output regulariser). Methods not validated under bfloat16 refuse (:data:`REFUSED`, with the
reason); the rest were compared with float32 on the same seeds (tests/test_precision.py, README).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch

from .errors import ConfigError

CHOICES = ("none", "bf16")

_HNET_VAE = "its hypernetwork-protected VAE replay is not validated in bfloat16 (hnet itself runs)"
_GAN = ("its generative replay trains a WGAN-GP critic whose gradient penalty differentiates through the critic "
        "twice; not validated in bfloat16")
REFUSED: dict[str, str] = {
    "hnet-tir": _HNET_VAE, "hnet-r": _HNET_VAE,
    "dgmw": _GAN, "dgma": _GAN,
    "dgr": "its VAE replay is not validated in bfloat16", "dgr-distill": "its VAE replay is not validated in bfloat16",
}


def check(amp: str, method_name: str, config: object | None = None, device: torch.device | None = None) -> None:
    """Refuse an unknown ``amp``, a method that is not safe with it, or a device without bfloat16."""
    if amp not in CHOICES:
        raise ConfigError(f"--amp {amp!r} is not valid; valid: {', '.join(CHOICES)}")
    if amp == "none":
        return
    why = REFUSED.get(method_name)
    if why is None and method_name == "ccgn" and getattr(config, "memory", None) == "generative":
        why = "memory=generative trains per-task WGAN-GP generators; not validated in bfloat16 (memory=buffer works)"
    if why is not None:
        raise ConfigError(f"method {method_name!r} does not run with --amp {amp}: {why}; use --amp none")
    if device is not None and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"--amp {amp}: {torch.cuda.get_device_name(device)} has no bfloat16; use --amp none")
    if device is not None and device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--amp {amp} runs on cpu or cuda, not {device.type}")


def float32(fn):
    """Decorator: ``fn`` runs with autocast off, so what it computes from float32 parameters is float32 (the
    hypernetwork's output regulariser: its targets and the differences to them need float32's mantissa)."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        with contextlib.ExitStack() as stack:
            for device in ("cpu", "cuda"):
                if torch.is_autocast_enabled(device):
                    stack.enter_context(torch.autocast(device_type=device, enabled=False))
            return fn(*args, **kwargs)
    return run


@contextlib.contextmanager
def autocast(device: torch.device, amp: str) -> Iterator[None]:
    """bfloat16 autocast on ``device`` when ``amp`` asks for it; nothing at all otherwise."""
    if amp == "none":
        yield
        return
    # The region spans whole tasks (forward, backward and optimiser steps): autocast's cache of bfloat16 weight
    # copies lives as long as the region, so it would keep serving the weights of before the first step.
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=False):
        yield
