"""What machine a benchmark ran on, and the precision it computes natively. No torch import.

Benchmarks compare precisions only within one machine kind (../shared/PLATFORM.md): an Intel Xeon
with AVX512-BF16/AMX runs bf16 natively, an AVX2-only AMD EPYC emulates it ~500x slower than fp32.
Every benchmark prints ``describe()`` first, so a figure always names the CPU it came from.
"""
from __future__ import annotations

import os
import platform
from functools import cache

FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma")


@cache
def cpu_info() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    break  # the first processor is enough
                key, _, value = line.partition(":")
                info[key.strip()] = value.strip()
    except OSError:
        pass
    return info


def cpu_flags() -> set[str]:
    return set(cpu_info().get("flags", "").split())


def native_cpu_precision() -> str:
    """bf16 where the CPU has AVX512-BF16 or AMX, else fp32 (what the studio's ``auto`` picks)."""
    return "bf16" if cpu_flags() & {"avx512_bf16", "amx_bf16"} else "fp32"


def machine_kind() -> str:
    flags = cpu_flags()
    if flags & {"amx_bf16", "avx512_bf16"}:
        return "AVX512-BF16/AMX"
    if "avx512f" in flags:
        return "AVX512 (no bf16)"
    return "AVX2-only" if "avx2" in flags else "no AVX2"


def describe() -> str:
    model = cpu_info().get("model name", platform.processor() or platform.machine())
    flags = " ".join(f for f in FLAGS_OF_INTEREST if f in cpu_flags()) or "none of " + ",".join(FLAGS_OF_INTEREST)
    return (f"machine: {model} | {machine_kind()} | flags: {flags} | {os.cpu_count()} cores | "
            f"native CPU precision: {native_cpu_precision()}")
