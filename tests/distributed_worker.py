"""Run under ``torch.distributed.run`` by tests/test_distributed.py: several data-parallel runs in one launch
(one process group, so the test pays the launch once). argv[1]: a JSON list of runs, each
``{"method", "config", "out", "digests"}``; argv[2]: the data root; argv[3]: benchmark options (JSON)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from forgetless import distributed, runner

if __name__ == "__main__":
    runs = json.loads(Path(sys.argv[1]).read_text())
    bench = json.loads(sys.argv[3])
    for spec in runs:
        os.environ[distributed.DIGEST_DIR_ENV] = spec["digests"]
        runner.run(spec["method"], "split-mnist", scenario="task", seed=0, config=spec["config"],
                   bench_options=bench, out=spec["out"], data_root=sys.argv[2], quiet=True)
