"""Stop a run whose training diverged (a non-finite loss or parameter) instead of reporting chance accuracy.

Nothing here synchronises with the device per step: logged values are checked where :meth:`Context.log`
has already read them back (at ``should_log`` points, step 0 included), and parameters once per task.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import DivergedError


def check_logged(values: Mapping[str, Any], task_index: int) -> None:
    """Raise :class:`DivergedError` if a real number among ``values`` (already host floats) is nan or inf."""
    for name, value in values.items():
        if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral) \
                and not math.isfinite(value):
            step = values.get("step")
            step = step if isinstance(step, int) else None
            where = f"step {step}" if step is not None else "a log point"
            raise DivergedError(f"diverged at task {task_index + 1}, {where} ({name}={value})",
                                task=task_index + 1, step=step, name=name, value=float(value))


def check_parameters(model: nn.Module, task_index: int) -> None:
    """Raise :class:`DivergedError` if any floating-point parameter of ``model`` holds a nan or inf (one host
    read for the whole model; the offending parameter is looked up only then)."""
    params = [(n, p) for n, p in model.named_parameters() if p.is_floating_point() or p.is_complex()]
    if not params:
        return
    flags = torch.stack([torch.isfinite(p.detach()).all().to(params[0][1].device) for _, p in params])
    if bool(flags.all()):
        return
    name = next(n for (n, _), ok in zip(params, flags.tolist(), strict=True) if not ok)
    raise DivergedError(f"diverged at task {task_index + 1}, after its last step (parameter {name} is not finite)",
                        task=task_index + 1, step=None, name=f"parameter {name}", value=math.nan)
