"""Reusable layers: backbones (torchvision's layouts in torchvision_layouts) and heads, task-conditioned
modules (task batch norm), binary masks; gates, sparse layers, input standardisation, batch-norm re-estimation
and hypernetworks in their modules."""

from . import backbones, heads, masks, taskwise, torchvision_layouts

__all__ = ["backbones", "heads", "masks", "taskwise", "torchvision_layouts"]
