"""The run directory: created with one-line errors, and held under an exclusive lock for the whole run.

Two runs into the same ``--out`` would interleave checkpoints, logs and results; the second one is refused
instead. The lock is ``OUT/.lock`` under ``flock(LOCK_EX | LOCK_NB)``: the kernel drops it when its holder
exits, however it exits, so a lock file left behind by a killed run is simply locked again (taken over).
The file holds the holder's pid, host and start time, which is what the refusal names.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .errors import ConfigError, RunLockedError

LOCK_NAME = ".lock"

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: runs are not locked there
    fcntl = None  # type: ignore[assignment]


def check_out(path: Path, flag: str = "--out") -> None:
    """Refuse, without creating anything, an output directory that is a file, lies under a file, or whose
    nearest existing ancestor cannot be written (so a dry run or a long comparison fails at once)."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"{flag} {path} is a file; valid: a directory (existing or to be created)")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"{flag} {path} is not writable; valid: a directory you can write to")
        return
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{flag} {path} lies under {parent}, which is a file; valid: a directory path")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise ConfigError(f"{flag} {path} cannot be created: {parent} is not writable; "
                                  f"valid: a directory you can write to")
            return


def make_dir(path: Path, flag: str = "--out") -> None:
    """``mkdir -p`` whose failures are one-line :class:`ConfigError`\\ s naming ``flag``."""
    path = Path(path)
    check_out(path, flag)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"{flag} {path} is a file; valid: a directory (existing or to be created)") from None
    except NotADirectoryError:
        raise ConfigError(f"{flag} {path} lies under a file; valid: a directory path") from None
    except OSError as exc:
        raise ConfigError(f"{flag} {path} cannot be created ({exc.strerror}); "
                          f"valid: a directory you can write to") from None


def _holder(fh: IO[str]) -> str:
    fh.seek(0)
    try:
        info = json.loads(fh.read() or "{}")
        return f"pid {info['pid']} on host {info['host']} (since {info['since']})"
    except (ValueError, KeyError, TypeError):  # the holder has opened the file but not written it yet
        return "another process"


@contextlib.contextmanager
def locked(path: Path, flag: str = "--out") -> Iterator[None]:
    """Create run directory ``path`` and hold its lock until the block exits; a second holder, in this
    process or another, gets :class:`RunLockedError` naming the first (flock locks belong to an open file
    description, so even a second open in the same process conflicts)."""
    path = Path(path)
    make_dir(path, flag)
    if fcntl is None:  # pragma: no cover
        yield
        return
    try:
        # "a+": never truncates the current holder's record before we know the lock is ours
        fh = open(path / LOCK_NAME, "a+")  # noqa: SIM115 - held open for the whole block
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot create its lock file ({exc.strerror}); "
                          f"valid: a directory you can write to") from None
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                raise RunLockedError(f"{path} is in use by {_holder(fh)}; wait for it to finish or use another "
                                     f"{flag}") from None
            # e.g. a network file system without flock: run, but say the run is unprotected
            print(f"forgetless: warning: cannot lock {path} ({exc.strerror}); concurrent runs into it are not "
                  f"detected", file=sys.stderr)
        fh.seek(0)
        fh.truncate()
        since = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}) + "\n")
        fh.flush()
        try:
            yield
        finally:
            # Emptied, not removed: unlinking a lock file lets a waiter lock the old inode while a newcomer
            # creates and locks a new one, and both would run.
            fh.seek(0)
            fh.truncate()
    finally:
        fh.close()  # releases the flock
