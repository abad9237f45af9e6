"""forgetless: continual learning without forgetting.

Library first: ``forgetless.data.load``, ``forgetless.benchmarks.build``/``from_tensors``,
``forgetless.methods.create`` and ``forgetless.runner.run`` are the public entry points; the
``forgetless`` command line is a thin layer over them.
"""

__version__ = "0.1.0"
