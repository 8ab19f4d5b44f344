"""What the pipeline (pipeline.py) asks of the things it runs: the frame record, and the
protocols of sources, processors and sinks.

The pipeline calls every member named here on every source, processor and sink it is given,
and nothing else: `Pipeline` refuses an object that lacks one (`conform`), before any thread
starts, rather than failing half-way through a video. The image folder, the video, the frames in
memory and the test doubles all implement the same protocols; a class that derives from one
inherits the defaults written here (an input that is never live, has no problems to report and
needs no closing; a sink with nothing to write for a failed frame) and must write the rest, the
members marked abstract, or it cannot be instantiated.
"""

from __future__ import annotations

import abc
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np


@dataclass
class Frame:
    index: int
    key: str  # relative path for images, "frame N" for video
    image: np.ndarray | None
    path: Path | None = None  # the input file (images)
    error: str | None = None
    meta: dict = field(default_factory=dict)
    # Work a stage ahead of the processor did for this frame, handed to `Processor.prepare`
    # (detect-ahead: a Future of its faces). It rides on the frame itself, so a frame can only
    # ever get its own, whatever its content and whichever frames before it were dropped.
    ahead: Any = None


@runtime_checkable
class Source(Protocol):
    """Frames in order, each with its `index` and `key`; a file that cannot be used is a frame
    with `error` set, not an exception. An exception from iterating ends the input: the frames
    before it are still finished and the exception is reported."""

    total: int | None = None  # inputs announced before reading (None: not known, e.g. a live input)
    live: bool = False  # no end of its own (a capture device, a stream URL): a stop is its normal end
    # Whole-input problems met while reading (the run counts them as failures), and what a user
    # should know; read after the last frame.
    problems: Sequence[str] = ()
    notes: Sequence[str] = ()
    # The input as the report names it beside a whole-input problem (a path, a URL). A plain
    # attribute, so a source may set it or make it a property.
    name: str = "input"

    @abc.abstractmethod
    def __iter__(self) -> Iterator[Frame]: ...

    @abc.abstractmethod
    def describe(self) -> str: ...

    def stop_reading(self) -> None:
        """End a live input now, from any thread; the frames read so far still come out. An
        input with an end of its own has nothing to stop."""

    def close(self) -> None:
        """Release the input (called once, after the last frame or a stop)."""


@runtime_checkable
class Processor(Protocol):
    """prepare(image, ahead) -> (crops, state); finish(image, state, outputs) -> output image.

    Both are called once per frame, in frame order: `prepare` on the decode thread, `finish` on
    the writer thread. Crops are uint8 `size` x `size` x 3; none means "pass the frame through".
    `ahead` is the frame's `Frame.ahead`. `state` is whatever `finish` needs; it travels with
    the frame, so nothing per frame is kept on the processor.
    """

    size: int

    @abc.abstractmethod
    def prepare(self, image: np.ndarray, ahead: Any = None) -> tuple[list[np.ndarray], Any]: ...

    @abc.abstractmethod
    def finish(self, image: np.ndarray, state: Any, outputs: list[np.ndarray]) -> np.ndarray: ...


@runtime_checkable
class Sink(Protocol):
    """Where finished frames go, in order. `finish(commit)` ends the output (commit: keep it) and
    returns notes for the summary."""

    # Whether an error writing one frame ends the run (a video with a hole in it is no output)
    # or costs that frame only (an image file). No default: every sink must decide.
    fatal_write_errors: bool
    # Kept whole or not at all (a video): a run that does not commit counts its frames discarded.
    all_or_nothing: bool = False

    @abc.abstractmethod
    def describe(self) -> str: ...

    @abc.abstractmethod
    def write(self, frame: Frame, image: np.ndarray) -> Any: ...

    def skip(self, frame: Frame) -> None:
        """A frame that failed: whatever must still go out with it (a video's sound). Nothing,
        for a sink that only writes images."""

    @abc.abstractmethod
    def finish(self, commit: bool) -> list[str]: ...


def members(protocol: type) -> list[str]:
    """The names a protocol asks for (its own and its bases'), in the order declared."""
    names: list[str] = []
    for base in reversed(protocol.__mro__):
        if base is object or base is Protocol or not getattr(base, "_is_protocol", False):
            continue
        for n in list(base.__dict__.get("__annotations__", {})) + list(base.__dict__):
            if (not n.startswith("_") or n == "__iter__") and n not in names:
                names.append(n)
    return names


def _takes(method, like) -> bool:
    """Whether `method` can be called with as many positional arguments as the protocol's `like`
    (a processor written before `prepare` took `ahead` fails here, not on every frame)."""
    n = len(inspect.signature(like).parameters) - 1  # less self
    try:
        inspect.signature(method).bind(*([None] * n))
    except TypeError:
        return False
    except ValueError:  # no signature to read (a builtin): trust it
        return True
    return True


def conform(obj: object, protocol: type, role: str) -> None:
    """Refuse, naming what is missing, an object that does not implement `protocol`: the
    pipeline calls every member, so a gap would otherwise surface mid-run as an AttributeError
    (or a TypeError for each frame) on one of its threads."""
    names = members(protocol)
    missing = [n for n in names if not hasattr(obj, n)]
    if missing:
        raise TypeError(f"{role} {type(obj).__name__} does not implement engine.contracts.{protocol.__name__}: "
                        f"it lacks {', '.join(missing)} (derive it from {protocol.__name__} for the defaults)")
    wrong = [n for n in names if inspect.isfunction(protocol.__dict__.get(n))
             and not _takes(getattr(obj, n), protocol.__dict__[n])]
    if wrong:
        raise TypeError(f"{role} {type(obj).__name__} does not implement engine.contracts.{protocol.__name__}: "
                        + "; ".join(f"its {n} does not take {protocol.__name__}.{n}'s arguments "
                                    f"{tuple(inspect.signature(protocol.__dict__[n]).parameters)[1:]}"
                                    for n in wrong))
