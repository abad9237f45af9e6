"""User-facing errors: the CLI prints their message on one line and exits with status 2."""


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


def choices(valid) -> str:
    """Format valid choices for a one-line error message."""
    return ", ".join(sorted(str(v) for v in valid))
