"""Task streams built from datasets: ``build(name, scenario, seed, **options) -> Benchmark``.

Every module in this package registers its benchmarks on import (``@register``); they are all
imported here, so adding a benchmark is adding a module.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import (
    BENCHMARKS,
    SCENARIOS,
    Benchmark,
    BenchmarkInfo,
    Split,
    Task,
    assign_labels,
    build,
    register,
)
from .custom import from_dataset, from_tensors

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "BENCHMARKS", "SCENARIOS", "Benchmark", "BenchmarkInfo", "Split", "Task", "assign_labels", "build",
    "from_dataset", "from_tensors", "register",
]
