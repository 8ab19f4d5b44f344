"""Read an ONNX file's metadata_props without the onnx package and without parsing the graph.

`onnx.load` parses every node and weight: 0.7 s for the full generator's 45 MB graph on the
2-core machine, all of it start-up time before the first image. metadata_props is a top-level
field of ModelProto, so a scan of the top-level protobuf fields that seeks past the others
(the graph is one length-delimited field) reads it in a millisecond. `cyclemask.artifacts.
read_onnx_metadata` reads every graph's metadata this way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

#: ModelProto field numbers (onnx.proto): 14 = repeated StringStringEntryProto metadata_props.
METADATA_PROPS_FIELD = 14
_KEY, _VALUE = 1, 2  # StringStringEntryProto


class NotOnnx(ValueError):
    """The bytes are not a well-formed protobuf message at the top level."""


def _varint(f: BinaryIO) -> int | None:
    """The next varint, or None at a clean end of file."""
    shift, value = 0, 0
    while True:
        b = f.read(1)
        if not b:
            if shift == 0:
                return None
            raise NotOnnx("truncated varint")
        value |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return value
        shift += 7
        if shift > 63:
            raise NotOnnx("varint too long")


def _varint_bytes(buf: bytes, i: int) -> tuple[int, int]:
    shift, value = 0, 0
    while True:
        if i >= len(buf) or shift > 63:
            raise NotOnnx("bad varint in a metadata entry")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def _entry(buf: bytes) -> tuple[str, str]:
    key = value = ""
    i = 0
    while i < len(buf):
        tag, i = _varint_bytes(buf, i)
        field, wire = tag >> 3, tag & 7
        if wire != 2:
            raise NotOnnx("unexpected wire type in a metadata entry")
        n, i = _varint_bytes(buf, i)
        text = buf[i:i + n].decode("utf-8", errors="replace")
        i += n
        if field == _KEY:
            key = text
        elif field == _VALUE:
            value = text
    return key, value


def scan_metadata_props(path: str | os.PathLike) -> dict[str, str]:
    """metadata_props of the ONNX file at `path` as raw strings (the onnx package's
    `{e.key: e.value for e in model.metadata_props}`). Raises NotOnnx on malformed input and
    OSError when the file cannot be read."""
    p = Path(path)
    size = p.stat().st_size
    props: dict[str, str] = {}
    with open(p, "rb") as f:
        while True:
            tag = _varint(f)
            if tag is None:
                return props
            field, wire = tag >> 3, tag & 7
            if field == 0:
                raise NotOnnx("field number 0")
            if wire == 0:
                if _varint(f) is None:
                    raise NotOnnx("truncated varint field")
            elif wire == 1:
                f.seek(8, os.SEEK_CUR)
            elif wire == 5:
                f.seek(4, os.SEEK_CUR)
            elif wire == 2:
                n = _varint(f)
                if n is None or f.tell() + n > size:
                    raise NotOnnx("a field runs past the end of the file")
                if field == METADATA_PROPS_FIELD:
                    k, v = _entry(f.read(n))
                    props[k] = v
                else:
                    f.seek(n, os.SEEK_CUR)
            else:
                raise NotOnnx(f"wire type {wire} at the top level")
            if f.tell() > size:
                raise NotOnnx("truncated file")

