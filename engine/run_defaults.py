"""What a run settles by itself: the batch size when --batch is not given (what suits the
backend and device), and what it says about a quality-changing precision.

On a CPU, batching buys nothing: a convolution over one 256 px image already fills the cores,
and eager PyTorch on the 2-core machine was slower at batch 4 than at batch 1 (1.52 against
1.74 images/s, benchmarks/cpu_backends.py). Small batches also bring the first output sooner
and keep decode, inference and encode overlapped. OpenVINO's throughput mode runs one image per
infer request side by side (a batch is split over the free requests), so its batch is its
request count. GPUs need large batches to fill them; a TensorRT engine runs the batch its
profile was tuned for (cyclemask-export --opt-batch).
"""

from __future__ import annotations

CPU_BATCH = 1
GPU_BATCH = 8


def default_batch(backend) -> tuple[int, str]:
    """(batch, why) for an activated backend."""
    opt = getattr(backend, "opt_batch", None)
    if opt:  # a TensorRT engine: its profile spans a range and is tuned for one batch
        return int(opt), "the batch the TensorRT engine's profile was tuned for"
    if backend.max_batch:  # built for one batch size (CUDA graphs, torch.compile, a fixed-batch graph)
        return int(backend.max_batch), "the batch the backend was built for"
    providers = [p.lower() for p in backend.providers]
    on_cpu = bool(providers) and all("cpu" in p for p in providers[:1])
    if backend.name == "openvino":
        if getattr(backend, "mode", "") == "throughput" and backend.max_in_flight > 1:
            return backend.max_in_flight, "one image per OpenVINO infer request"
        return CPU_BATCH, "OpenVINO latency mode: one image at a time"
    if on_cpu:
        return CPU_BATCH, "batching does not speed up a CPU backend"
    return GPU_BATCH, "GPUs need several images per call to fill them"


def built_batch(device: str, cuda_graphs: bool, compile_: bool) -> int | None:
    """Without --batch: the batch CUDA graphs and torch.compile are built for (they fix it at
    load), by the device they will run on; None for everything else (chosen once loaded)."""
    if not (cuda_graphs or compile_):
        return None
    from .backends.torch import resolve_device

    return CPU_BATCH if resolve_device(device)[0] == "cpu" else GPU_BATCH


def precision_notes(backend) -> list[str]:
    """Lines for a run at BF16 or on an INT8 graph: what was verified at export, or that it was not."""
    from cyclemask.artifacts import verification_note

    meta = getattr(backend, "metadata", None) or {}
    notes = []
    if meta.get("precision") == "int8":
        got = verification_note(meta, "int8")
        notes.append(f"INT8 graph, verified at export: {got}" if got else
                     "INT8 graph without a recorded verification (cyclemask-export --int8 verifies one)")
    if getattr(backend, "precision", "fp32") == "bf16":
        got = verification_note(meta, "bf16") if backend.name == "openvino" else None
        if got:
            notes.append(f"BF16 verified for this graph at export: {got}")
        elif backend.name == "openvino":
            notes.append("BF16 has not been verified for this graph (cyclemask-export --bf16 checks it against "
                         "FP32 on held-out faces)")
        else:
            notes.append("BF16: weights and activations in bfloat16; results differ slightly from FP32 "
                         "(README, \"On a CPU\", gives the measured error)")
    return notes
