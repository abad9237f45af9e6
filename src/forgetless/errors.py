"""User-facing errors: the CLI prints their message on one line and exits with status 2 (3 for a diverged run)."""

from __future__ import annotations


class ForgetlessError(Exception):
    """Base class for errors caused by bad input or a missing resource, not by a bug."""


class ConfigError(ForgetlessError, ValueError):
    """An unknown name or key, or a value that cannot be parsed or is out of range."""


class DatasetNotFoundError(ForgetlessError, FileNotFoundError):
    """The dataset files are missing and could not be downloaded."""


class ChecksumError(ForgetlessError):
    """A dataset file exists but its MD5 differs from the official one (corrupt or truncated)."""


class CorruptImageError(ForgetlessError):
    """An image file of an image folder cannot be decoded."""


class RunExistsError(ForgetlessError):
    """The output directory already holds a run that would be overwritten."""


class RunLockedError(ForgetlessError):
    """The run directory is locked by another live process (another run into the same --out)."""


class DivergedError(ForgetlessError):
    """Training produced a non-finite loss or parameter; the run stops (exit status 3, not 2: the input
    parsed fine, the optimisation failed)."""

    def __init__(self, message: str, *, task: int, step: int | None, name: str, value: float) -> None:
        super().__init__(message)
        self.task = task  # 1-based, as the progress lines and checkpoints/task-<T>.pt count
        self.step = step  # 0-based optimiser step within the task; None: found after the task
        self.name = name
        self.value = value

    def __reduce__(self):  # keyword-only arguments: rebuild explicitly (errors cross process pools)
        return _rebuild_diverged, (str(self), self.task, self.step, self.name, self.value)

    def marker(self) -> dict:
        """What results.json records (the value as text: JSON has no nan or inf)."""
        return {"task": self.task, "step": self.step, "name": self.name, "value": str(self.value)}


def _rebuild_diverged(message: str, task: int, step: int | None, name: str, value: float) -> DivergedError:
    return DivergedError(message, task=task, step=step, name=name, value=value)


def choices(valid) -> str:
    """Format valid choices for a one-line error message."""
    return ", ".join(sorted(str(v) for v in valid))
