"""Backend options, declared once.

Each `Option` names a setting, its type, default, help text and the backends that take it (with
the keyword each backend's constructor takes it as). Everything else is generated from this
table: `BackendOptions` (below), the matching `RunOptions` fields (engine/run.py), the
`cyclemask-run` flags (engine/cli.py) and the keywords a backend's `from_options` passes on
(`keywords`). Adding a backend option is one entry here plus the backend's use of its keyword
(docs/ARCHITECTURE.md, "Adding a backend option").

Nothing here imports click or a backend library: the CLI turns `choices` / `range` into click
types, and `precision`'s choices are the registry's (`select.precision_choices`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any

from cyclemask.artifacts import DEFAULT_STREAMS
from cyclemask.declare import Option, keywords_for

OPTIONS: tuple[Option, ...] = (
    Option("device", str, "auto", "torch backend: auto (CUDA when present), cpu, cuda or cuda:N.",
           {"torch": "device"}),  # torch.from_options resolves auto
    Option("precision", str, "fp32",
           "fp32 everywhere by default. bf16 (opt-in, changes results slightly; never picked by auto): "
           "openvino for graphs, torch for checkpoints on a CPU with native BF16 (AVX512-BF16 or AMX), "
           "about 2x faster there; an error on CPUs without it. fp16: torch on CUDA. Graphs and engines "
           "otherwise run their own precision (an INT8 graph from cyclemask-export --int8 runs INT8).",
           # Its choices are the registry's (select.precision_choices), given to the CLI there.
           {"torch": "precision", "openvino": "precision"}),
    Option("ort_provider", str, "auto",
           "ort backend: the ONNX Runtime execution provider; an explicit one that does not "
           "load is an error (auto takes the best that does).",
           {"ort": "provider"}, choices=("auto", "tensorrt", "cuda", "cpu")),
    Option("ort_graph_opt", str, "all",
           "ort backend: ONNX Runtime's graph optimisations (node fusions, constant folding); basic or off "
           "to tell a fusion's numerical effect from the model's own.",
           {"ort": "graph_opt"}, choices=("all", "extended", "basic", "off")),
    Option("image_size", int, None,
           "torch backend: model input size in pixels (multiple of 4). Default: the size the "
           "checkpoint records, else 256. Graphs and engines fix their own.",
           {"torch": "image_size"}, range=(4, 4096), flag="--size", field="size", optional=True),
    Option("streams", int, DEFAULT_STREAMS,
           "trt backend: CUDA streams (execution contexts), i.e. batches in flight; at most as many as "
           "the engine has optimization profiles (cyclemask-export --streams).",
           {"trt": "streams"}, range=(1, 16)),
    Option("threads", int, None,
           "CPU threads for the torch / ort / openvino backends. Default: the library's choice "
           "(openvino: the CPUs this process may use).",
           {"torch": "threads", "ort": "threads", "openvino": "threads"}, range=(1, 512), optional=True),
    Option("cuda_graphs", bool, False, "torch backend on CUDA: capture and replay a CUDA graph.",
           {"torch": "cuda_graphs"}),
    Option("channels_last", bool, False, "torch backend: channels-last memory format.", {"torch": "channels_last"}),
    Option("compile", bool, False,
           "torch backend: torch.compile the model (CPU or CUDA). Compiling takes seconds to "
           "a minute at load (reported); the kernels are cached in $TORCHINDUCTOR_CACHE_DIR "
           "(default ~/.cache/cyclemask/torchinductor) for later runs.",
           {"torch": "compile"}),
    Option("ov_mode", str, "throughput",
           "openvino backend: throughput keeps several batches in flight on separate CPU "
           "streams (folders, videos); latency puts every thread on one batch.",
           {"openvino": "mode"}, choices=("throughput", "latency")),
    Option("ov_requests", int, None,
           "openvino backend, throughput mode: infer requests (batches) in flight. "
           "Default: OpenVINO's optimum for this CPU.",
           {"openvino": "requests"}, range=(1, 64), optional=True),
    Option("probe", bool, True,
           "--backend auto with a graph on a CPU machine: time OpenVINO and ONNX Runtime on "
           "single images for about a second and keep OpenVINO unless ONNX Runtime is more than 10 % "
           "faster (remembered for this graph and "
           "machine, see --cache); a heavy graph (over ~10 GMACs per image, estimated from the file: "
           "the full generator) gets OpenVINO untimed. --no-probe: OpenVINO whenever it is installed.",
           {}, negatable=True),
    Option("cache", bool, True,
           "Keep compiled OpenVINO models and auto's measured choice under ~/.cache/cyclemask "
           "($CYCLEMASK_CACHE_DIR), keyed on the graph's content, so later runs start faster.",
           # The model cache: 0.2 s instead of 0.6-1.0 s to load the full generator on 2 cores.
           {"openvino": ("cache_dir", lambda on: "auto" if on else None)}, negatable=True),
    Option("max_batch", int, None, "The largest batch the run submits (from --batch, see engine/run_defaults.py).",
           {"torch": "max_batch", "ort": "max_batch"}, optional=True, cli=False),
)

BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}


class _Keywords:
    def keywords(self, backend: str, **convert) -> dict[str, Any]:
        """The keyword arguments of `backend`'s constructor that these options set; `convert`
        maps a keyword to a function of the value where the backend needs it resolved first (a
        conversion that would import a backend module lives with that backend, not here)."""
        return keywords_for(OPTIONS, self, backend, **convert)


BackendOptions = dataclasses.make_dataclass(
    "BackendOptions", [(o.name, o.annotation, field(default=o.default)) for o in OPTIONS],
    bases=(_Keywords,), frozen=True)
BackendOptions.__module__ = __name__  # pickled into Ray workers: found by module and name
BackendOptions.__doc__ = "Every backend's settings (generated from OPTIONS); `keywords(name)` gives one backend's."


def run_fields() -> list[tuple[str, Any, Any]]:
    """The RunOptions fields the CLI sets for the backend (every option but the derived ones)."""
    return [(o.run_field, o.annotation, field(default=o.default)) for o in OPTIONS if o.cli]
