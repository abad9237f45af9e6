"""Reusable layers: backbones and heads, task-conditioned modules (task batch norm), binary masks; gates,
sparse layers, input standardisation, batch-norm re-estimation and hypernetworks in their modules."""

from . import backbones, heads, masks, taskwise

__all__ = ["backbones", "heads", "masks", "taskwise"]
