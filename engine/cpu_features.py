"""What this CPU can do natively at low precision: BF16 and INT8 dot products.

BF16 and INT8 only pay off where the CPU has instructions for them (x86: AVX512-BF16 or
AMX-BF16; AVX512-VNNI, AVX-VNNI or AMX-INT8; Arm: the BF16 and I8MM extensions). Elsewhere
OpenVINO quietly runs FP32 under a BF16 hint and PyTorch emulates BF16 convolutions, slower than
FP32: a user who asks for BF16 there gets a clear error instead (`require_bf16`).

The flags come from /proc/cpuinfo (Linux), and, where OpenVINO is installed and already chosen,
from its CPU plugin's OPTIMIZATION_CAPABILITIES (which lists BF16 only where it runs natively).
Nothing here imports torch or OpenVINO at module import.
"""

from __future__ import annotations

import functools
import logging
import platform
from dataclasses import dataclass
from pathlib import Path

from cyclemask.errors import ConfigError

log = logging.getLogger(__name__)

BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # x86 (Linux cpuinfo names)
INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")
ARM_BF16_FLAGS = ("bf16",)  # aarch64 "Features"
ARM_INT8_FLAGS = ("i8mm", "asimddp")


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU's model name and low-precision instruction sets, as far as they can be read."""

    model: str
    flags: frozenset[str]
    known: bool  # False where the flags could not be read (not Linux, unreadable cpuinfo)

    @property
    def bf16(self) -> list[str]:
        """The native BF16 instruction sets this CPU has (empty: none, or unknown)."""
        return [f for f in BF16_FLAGS + ARM_BF16_FLAGS if f in self.flags]

    @property
    def int8(self) -> list[str]:
        return [f for f in INT8_FLAGS + ARM_INT8_FLAGS if f in self.flags]

    def describe(self) -> str:
        if not self.known:
            return f"{self.model} (instruction sets unknown on {platform.system()})"
        bf16 = "/".join(self.bf16) or "no native BF16"
        int8 = "/".join(self.int8) or "no INT8 dot product"
        return f"{self.model}: {bf16}; {int8}"


def _parse_cpuinfo(text: str) -> CpuFeatures:
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return CpuFeatures(model or platform.processor() or platform.machine(), frozenset(flags), bool(flags))


@functools.lru_cache(maxsize=1)
def cpu_features(cpuinfo: str = "/proc/cpuinfo") -> CpuFeatures:
    """This machine's CPU features (read once per process)."""
    try:
        return _parse_cpuinfo(Path(cpuinfo).read_text(errors="replace"))
    except OSError:
        return CpuFeatures(platform.processor() or platform.machine() or "unknown CPU", frozenset(), False)


def openvino_capabilities(core=None) -> list[str] | None:
    """OpenVINO's CPU OPTIMIZATION_CAPABILITIES (e.g. ['BF16', 'FP32', 'INT8', ...]), or None
    when OpenVINO is not installed or does not say. `core`: an ov.Core to ask (else a new one)."""
    from .openvino_import import import_openvino

    try:
        if core is None:
            core = import_openvino().Core()
        return [str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
    except Exception:  # not installed, or a build without this property
        return None


def bf16_support(ov_capabilities: list[str] | None = None) -> tuple[bool, str]:
    """Whether BF16 runs natively here, and the evidence (or why not) in words.

    `ov_capabilities`: OpenVINO's CPU OPTIMIZATION_CAPABILITIES where the OpenVINO backend asks;
    its word is final there (the plugin decides whether the BF16 hint is honoured).
    """
    feats = cpu_features()
    if ov_capabilities is not None:
        if "BF16" in ov_capabilities:
            return True, f"OpenVINO reports BF16 on {feats.model}"
        return False, (f"OpenVINO's CPU plugin reports no BF16 on {feats.model} "
                       "(it needs AVX512-BF16 or AMX; it would run FP32 under the BF16 hint)")
    if feats.bf16:
        return True, f"{feats.model} has {'/'.join(feats.bf16)}"
    if not feats.known:
        return False, f"cannot tell whether {feats.model} has native BF16 (its instruction sets cannot be read here)"
    return False, (f"{feats.model} has no native BF16 (needs AVX512-BF16 or AMX-BF16 on x86, BF16 on Arm); "
                   "BF16 would be emulated, slower than FP32")


def require_bf16(backend: str, ov_capabilities: list[str] | None = None) -> str:
    """The evidence that BF16 runs natively here; ConfigError naming the CPU where it does not."""
    ok, why = bf16_support(ov_capabilities)
    if not ok:
        raise ConfigError(f"--precision bf16 ({backend}): {why}; use --precision fp32")
    log.debug("bf16: %s", why)
    return why
