"""User-facing errors.

Every error a user can cause (a bad file, a bad flag value, a mismatched artefact) is a
`CycleMaskError`. The CLIs turn these into one line on stderr and exit status 1; anything else
is a bug and keeps its traceback.
"""


class CycleMaskError(Exception):
    """Base class of errors caused by input, configuration or environment, not by a bug."""


class ConfigError(CycleMaskError, ValueError):
    """A configuration value is out of range or inconsistent."""


class CheckpointError(CycleMaskError):
    """A checkpoint file is missing, corrupt, or does not match what was asked for."""


class InputError(CycleMaskError):
    """An input image, video or folder cannot be used."""


class ExportError(CycleMaskError):
    """An export could not be written or failed its verification."""


class BackendError(CycleMaskError):
    """An inference backend cannot be created or was given data it cannot take."""


class DataError(CycleMaskError):
    """A dataset is empty or malformed."""
