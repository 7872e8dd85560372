"""Which floating-point type runs fastest here: bfloat16 where the hardware has it, else float32."""

from __future__ import annotations

import functools
from pathlib import Path

__all__ = ["cpu_bf16_flags", "fast_dtype"]

#: CPU flags (``/proc/cpuinfo``) of the instructions that make bfloat16 matrix products fast
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.lru_cache(maxsize=1)
def cpu_bf16_flags() -> tuple[str, ...]:
    """The bfloat16 instruction flags this CPU reports (empty where there are none or nothing can be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return ()
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
            break
    return tuple(f for f in BF16_FLAGS if f in flags)


def fast_dtype(device: str | None = None) -> str:
    """``"bfloat16"`` on a CUDA device that supports it or a CPU with AMX / AVX512-BF16, else ``"float32"``."""
    import torch

    if device is not None and str(device).startswith("cuda"):
        return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if cpu_bf16_flags() else "float32"
