"""Reusable layers: backbones and heads here; masks, gates, sparse layers and hypernetworks in their modules."""

from . import backbones, heads

__all__ = ["backbones", "heads"]
