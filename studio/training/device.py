"""What the training device can do: precision, and how much memory a run really used."""
from __future__ import annotations

import functools
import resource
import sys

from studio.spec.problems import Problem


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@functools.cache
def cpu_supports_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls run natively (PLATFORM.md: ~1.3x faster than fp32)."""
    try:
        import torch

        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        try:
            flags = open("/proc/cpuinfo", encoding="utf-8").read()
        except OSError:
            return False
        return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str) -> str:
    """``auto`` -> bf16 where the device computes it natively, else fp16 on older GPUs, else fp32."""
    if precision != "auto":
        return precision
    if has_cuda():
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_supports_bf16() else "fp32"


def precision_problems(precision: str) -> list[Problem]:
    if precision == "fp16" and not has_cuda():
        return [Problem("train.precision", "fp16 mixed precision needs a CUDA GPU; this machine has none",
                        "use auto, bf16 or fp32")]
    if precision == "bf16":
        if has_cuda():
            import torch

            if not torch.cuda.is_bf16_supported():
                return [Problem("train.precision", "this GPU does not support bf16", "use auto or fp16")]
        elif not cpu_supports_bf16():
            return [Problem("train.precision", "this CPU has no native bf16 (AVX512-BF16/AMX)", "use auto or fp32")]
    return []


def torch_dtype(precision: str):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


def reset_peak_memory() -> None:
    if has_cuda():
        import torch

        torch.cuda.reset_peak_memory_stats()


def peak_memory_bytes() -> int:
    """On GPU the peak reserved by PyTorch's allocator (what decides an out-of-memory error); on
    CPU the peak resident set size of this process (the kernel's own high-water mark)."""
    if has_cuda():
        import torch

        return int(max(torch.cuda.max_memory_reserved(), torch.cuda.max_memory_allocated()))
    hwm = _vm_hwm_bytes()
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB


def _vm_hwm_bytes() -> int | None:
    """Linux: this process image's own peak RSS (VmHWM). ``ru_maxrss`` survives ``exec`` and so also
    counts the parent's memory that the fork copied before the child exec'd: a training child of a
    big worker process reported the worker's size (seen: 4.9 GiB for a 1.7 GiB run)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None
