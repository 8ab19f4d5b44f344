"""The backend interface: one contract over PyTorch, ONNX Runtime, OpenVINO and TensorRT.

Modelled on Polygraphy's runners: a backend is a context manager; `activate()` loads the model
(heavy imports happen there, so a machine without a GPU stack imports this package fine);
`deactivate()` frees. `submit(batch)` takes a uint8 NHWC RGB batch [N, S, S, 3], checks it, and
returns a handle whose `result()` gives the output: an array the caller owns (never a view of a
buffer the backend reuses), checked against the contract before it is handed over. Backends
that keep several batches in flight (TensorRT streams, OpenVINO infer requests) return before
the work is done; the pipeline keeps at most `max_in_flight` handles open, in order.

What a backend implements (docs/ARCHITECTURE.md, "Adding a backend"):

- `_activate()` / `_deactivate()`;
- `_start(batch) -> handle` for an asynchronous backend, or, for a synchronous one, subclass
  `SyncBackend` and implement `_run(batch) -> output`;
- optionally `_start_images(images)`, to stack a list of crops into a staging buffer of its own
  (TensorRT's pinned memory) instead of a new array;
- `description` and `providers`: what really runs the model.

Every backend has `notes` (said once, e.g. a fallback) and `warnings`, and `metadata` (the
graph's metadata_props, the engine's sidecar), which the CLI prints.
"""

from __future__ import annotations

import abc
import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cyclemask import DIRECTIONS
from cyclemask.artifacts import ONNX_FORMAT, metadata_direction
from cyclemask.errors import BackendError, ConfigError
from cyclemask.image_arrays import check_batch

from .options import BackendOptions  # noqa: F401 (generated from the declarations; imported from here)

log = logging.getLogger(__name__)

#: What an artefact kind is called in messages, and what runs it.
KIND_NAMES = {"engine": "a TensorRT engine", "graph": "an ONNX graph", "checkpoint": "a checkpoint"}


class Handle(Protocol):
    def result(self) -> np.ndarray: ...


class Ready:
    """The handle of a batch that was computed at submission."""

    def __init__(self, value: np.ndarray) -> None:
        self._value = value

    def result(self) -> np.ndarray:
        return self._value


class _Checked:
    """Wraps a backend's own handle: its output is checked against the contract once."""

    def __init__(self, backend: "Backend", handle: Handle, n: int) -> None:
        self._backend, self._handle, self._n = backend, handle, n
        self._value: np.ndarray | None = None

    def result(self) -> np.ndarray:
        if self._value is None:
            self._value = self._backend._check_output(self._handle.result(), self._n)
        return self._value


class Backend(abc.ABC):
    """Lifecycle, input and output checks, and what every backend reports."""

    name = "backend"

    def __init__(self, model_path: Path | None, direction: str | None) -> None:
        if direction is not None and direction not in DIRECTIONS:
            raise ConfigError(f"direction must be one of {', '.join(DIRECTIONS)}; got {direction!r}")
        self.model_path = Path(model_path) if model_path is not None else None
        self._requested_direction = direction
        self._direction: str | None = direction
        self._image_size: int | None = None
        self._active = False
        self.max_batch: int | None = None  # None: any batch size
        self.max_in_flight = 1
        self.notes: list[str] = []
        self.warnings: list[str] = []
        self.metadata: dict[str, Any] = {}

    # -- lifecycle -----------------------------------------------------------------------------
    def activate(self) -> "Backend":
        if not self._active:
            self._activate()
            self._active = True
            log.debug("%s ready: %s", self.name, self.description)
        return self

    def deactivate(self) -> None:
        if self._active:
            try:
                self._deactivate()
            finally:
                self._active = False

    def __enter__(self) -> "Backend":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    @property
    def is_active(self) -> bool:
        return self._active

    # -- what it runs --------------------------------------------------------------------------
    @property
    def image_size(self) -> int:
        if self._image_size is None:
            raise BackendError(f"{self.name}: image size unknown before activate()")
        return self._image_size

    @property
    def direction(self) -> str | None:
        return self._direction

    @property
    def providers(self) -> list[str]:
        """What really executes the model (devices / execution providers), best first."""
        return []

    @property
    def description(self) -> str:
        return self.name

    # -- inference -----------------------------------------------------------------------------
    def infer(self, batch_u8: np.ndarray) -> np.ndarray:
        return self.submit(batch_u8).result()

    def submit(self, batch_u8: np.ndarray) -> Handle:
        self._check_input(batch_u8)
        return _Checked(self, self._start(batch_u8), batch_u8.shape[0])

    def submit_images(self, images: list[np.ndarray]) -> Handle:
        """`submit` for a list of [S, S, 3] images (the pipeline's crops)."""
        self._check_active()
        if not images:
            raise BackendError(f"{self.name} backend input: expected at least one image; got none")
        s = self._image_size
        for i, im in enumerate(images):
            if not isinstance(im, np.ndarray) or im.dtype != np.uint8 or im.shape != (s, s, 3):
                got = f"{im.dtype} {list(im.shape)}" if isinstance(im, np.ndarray) else type(im).__name__
                raise BackendError(f"{self.name} backend input: image {i}: expected uint8 [{s}, {s}, 3]; got {got}")
        self._check_batch_size(len(images))
        return _Checked(self, self._start_images(images), len(images))

    def _start_images(self, images: list[np.ndarray]) -> Handle:
        return self._start(np.stack(images))

    @abc.abstractmethod
    def _activate(self) -> None: ...

    @abc.abstractmethod
    def _deactivate(self) -> None: ...

    @abc.abstractmethod
    def _start(self, batch_u8: np.ndarray) -> Handle:
        """Start a checked batch; return a handle whose result() is the output."""

    # -- checks --------------------------------------------------------------------------------
    def _check_active(self) -> None:
        if not self._active:
            raise BackendError(f"{self.name}: call activate() (or use `with backend:`) before infer()")

    def _check_batch_size(self, n: int) -> None:
        if self.max_batch is not None and n > self.max_batch:
            raise BackendError(
                f"{self.name} backend input: expected at most {self.max_batch} images per batch; got {n}"
            )

    def _check_input(self, batch_u8: np.ndarray) -> None:
        self._check_active()
        check_batch(batch_u8, self._image_size, what=f"{self.name} backend input")
        self._check_batch_size(batch_u8.shape[0])

    def _check_output(self, out: np.ndarray, n: int) -> np.ndarray:
        s = self._image_size
        if not isinstance(out, np.ndarray) or out.dtype != np.uint8 or tuple(out.shape) != (n, s, s, 3):
            got = f"{out.dtype} {list(out.shape)}" if isinstance(out, np.ndarray) else type(out).__name__
            raise BackendError(f"{self.name} backend output: expected uint8 {[n, s, s, 3]}; got {got}")
        return out

    def _check_direction(self, have: str | None, what: str) -> None:
        want = self._requested_direction
        if want is not None and have is not None and want != have:
            raise BackendError(
                f"{self.model_path}: this {what} translates '{have}', but --{want} was asked for "
                f"(a {what} holds one direction; use the '{want}' {what} or pass --{have})"
            )
        self._direction = have or want

    def _adopt_graph_metadata(self, metadata: dict) -> None:
        """Check an exported graph's metadata_props against the request and the graph's input
        (ONNX Runtime and OpenVINO run the same graphs, so they share this)."""
        p = self.model_path
        self.metadata = dict(metadata)
        if metadata.get("format") != ONNX_FORMAT:
            unknown = "" if metadata_direction(metadata) else "; it does not record its direction"
            self.notes.append(f"{p.name} was not written by cyclemask-export (no cyclemask format tag){unknown}")
        self._check_direction(metadata_direction(metadata), "graph")
        meta_size = metadata.get("image_size")
        if isinstance(meta_size, int) and meta_size != self._image_size:
            raise BackendError(
                f"{p}: metadata says image size {meta_size}, but the graph's input is {self._image_size}x{self._image_size}"
            )


class SyncBackend(Backend):
    """A backend that computes a batch when it is submitted."""

    def _start(self, batch_u8: np.ndarray) -> Handle:
        return Ready(self._run(batch_u8))

    @abc.abstractmethod
    def _run(self, batch_u8: np.ndarray) -> np.ndarray:
        """The output of a checked batch."""


def read_graph_metadata(path: Path) -> dict:
    """A graph's typed metadata_props for ONNX Runtime and OpenVINO alike; {} (the graph then
    counts as not written by cyclemask-export, which is said) when they cannot be read."""
    from cyclemask.artifacts import read_onnx_metadata
    from cyclemask.errors import CycleMaskError

    try:
        return read_onnx_metadata(path)
    except CycleMaskError as exc:
        log.debug("read_onnx_metadata(%s) failed: %s", path, exc)
        return {}
