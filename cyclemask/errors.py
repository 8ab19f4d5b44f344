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


class OutputError(CycleMaskError, OSError):
    """An output cannot be written (disk full, no permission, file too large, read-only).

    Also an OSError carrying the original errno and strerror, so code that handles OSError
    still does; str() is one line naming the file and the cause.
    """

    def __init__(self, path, errno: int | None, strerror: str | None, action: str = "cannot write") -> None:
        OSError.__init__(self, errno, strerror, str(path))
        self.action = action

    def __str__(self) -> str:
        import errno as _errno

        code = _errno.errorcode.get(self.errno or 0)
        cause = self.strerror or "unknown error"
        return f"{self.filename}: {self.action} ({cause}{f', {code}' if code else ''})"

    def __reduce__(self):  # OSError's own pickling would drop the path and the action
        return type(self), (self.filename, self.errno, self.strerror, self.action)


class OutputBusyError(CycleMaskError):
    """Another live run holds the lock of the output this run would write."""


#: The top-level names of the project's own modules (the package and its benchmarks).
OWN_MODULES = ("cyclemask", "benchmarks")


def own_module_missing(exc: ImportError) -> bool:
    """Whether an ImportError is about a module of the project itself.

    Only third-party packages are optional. An `except ImportError` around an optional import
    re-raises when this is true: a module of ours that cannot be imported is a stale path or a
    broken file, a bug to be seen, never a feature quietly turned off or "X is not installed".
    """
    return (exc.name or "").partition(".")[0] in OWN_MODULES
