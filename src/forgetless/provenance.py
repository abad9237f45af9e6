"""Where a run's numbers came from, recorded in ``results.json``: code (git commit and dirty flag when run
from a checkout, package version), command (argv), machine (host, torch threads, device), start time, and
the data files with their checksums."""

from __future__ import annotations

import datetime
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .data import base as data_base


def git_state(path: Path) -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the git checkout holding ``path``; None outside one (an installed wheel)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        top = Path(git("rev-parse", "--show-toplevel"))
        if not (top / "src" / "forgetless" / "__init__.py").is_file():
            return None  # installed inside some other repository (a venv in a user's project): not our commit
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def data_files(root: Path | None) -> dict[str, str]:
    """The verified data files under ``root`` (relative name -> md5) that this process has read."""
    if root is None:
        return {}
    base = str(root.resolve())
    return {os.path.relpath(p, base): md5 for p, md5 in sorted(data_base.VERIFIED.items())
            if p.startswith(base + os.sep)}


def collect(device: torch.device, data_root: str | None) -> dict[str, Any]:
    root = data_base.resolve_root(data_root)
    return {
        "git": git_state(Path(__file__).resolve().parent),
        "forgetless": __version__,
        "argv": list(sys.argv),
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "data_root": str(root),
        "data_files": data_files(root),
    }
