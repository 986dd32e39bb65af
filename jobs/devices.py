"""Devices as resources: what a worker has (each GPU with its memory, else the CPU with its RAM)
and a budget that places jobs' memory demands on them.

A worker runs several jobs at once while their demands fit together on its devices with a margin
(``DEFAULT_MARGIN`` of each device kept free: allocator fragmentation, the CUDA context of each
process, the estimator's error). A demand is the job's estimate until the job has measured its own
peak, which then replaces it. Torch is imported only where an NVIDIA driver exists.
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

GIB = 1024 ** 3
DEFAULT_MARGIN = 0.10
CPU, GPU = "cpu", "gpu"


@dataclass(frozen=True)
class Device:
    kind: str  # "gpu" | "cpu"
    index: int  # CUDA index for GPUs; 0 for the CPU
    total_bytes: int

    @property
    def name(self) -> str:
        return f"GPU {self.index}" if self.kind == GPU else "the CPU"

    def __str__(self) -> str:
        return f"{self.name} ({gib(self.total_bytes)})"


def gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def detect_devices() -> list[Device]:
    """Every GPU with its total memory (torch.cuda), else the CPU with the machine's RAM (psutil)."""
    if _nvidia_driver_present():
        import torch

        if torch.cuda.is_available():
            return [Device(GPU, i, torch.cuda.get_device_properties(i).total_memory)
                    for i in range(torch.cuda.device_count())]
    import psutil

    return [Device(CPU, 0, psutil.virtual_memory().total)]


def _nvidia_driver_present() -> bool:
    return Path("/proc/driver/nvidia").exists() or shutil.which("nvidia-smi") is not None


_SPEC = re.compile(r"^(cpu|gpu)(\d*):(\d+(?:\.\d+)?)\s*(gib|gb|mib|mb)?$", re.IGNORECASE)
_UNITS = {"gib": GIB, "gb": 10 ** 9, "mib": 1024 ** 2, "mb": 10 ** 6, None: GIB}


def parse_devices(text: str) -> list[Device]:
    """``gpu0:16GiB,gpu1:16GiB`` or ``cpu:24GiB`` (tests, or a worker told to use less than it has)."""
    devices = []
    for i, item in enumerate(p.strip() for p in text.split(",") if p.strip()):
        m = _SPEC.match(item)
        if not m:
            raise ValueError(f"device {item!r}: expected e.g. gpu0:16GiB or cpu:24GiB")
        kind, index, amount, unit = m.group(1).lower(), m.group(2), float(m.group(3)), (m.group(4) or "").lower() or None
        devices.append(Device(kind, int(index) if index else i, int(amount * _UNITS[unit])))
    kinds = {d.kind for d in devices}
    if not devices or len(kinds) > 1:
        raise ValueError(f"devices {text!r}: list GPUs only or the CPU only")
    return devices


@dataclass
class Demand:
    """What a job needs: ``bytes`` on each of ``count`` devices (a multi-GPU run takes several),
    optionally on one given device (``pin``: the chat engine's)."""

    bytes: int
    count: int = 1
    pin: int | None = None
    label: str = ""
    ref: str | None = None  # what holds the memory while the job runs, e.g. "run:3" (the UI names it)


@dataclass
class Budget:
    """Memory in use per device: running jobs (measured, else estimated) and resident models."""

    devices: list[Device]
    margin: float = DEFAULT_MARGIN
    used: dict[int, int] = field(default_factory=dict)  # device index -> bytes
    holders: dict[int, list[str]] = field(default_factory=dict)  # device index -> who holds it
    held: dict[int, list[dict]] = field(default_factory=dict)  # the same as {"label", "ref", "bytes"}

    def usable(self, device: Device) -> int:
        return int(device.total_bytes * (1 - self.margin))

    def free(self, device: Device) -> int:
        return self.usable(device) - self.used.get(device.index, 0)

    def add(self, indices: list[int], nbytes: int, label: str, ref: str | None = None) -> None:
        for i in indices:
            self.used[i] = self.used.get(i, 0) + nbytes
            self.holders.setdefault(i, []).append(f"{label} {gib(nbytes)}")
            self.held.setdefault(i, []).append({"label": label, "ref": ref, "bytes": int(nbytes)})

    def place(self, demand: Demand) -> list[int] | None:
        """The devices this demand fits on now (most free first), or None."""
        candidates = [d for d in self.devices if demand.pin is None or d.index == demand.pin]
        fitting = sorted((d for d in candidates if self.free(d) >= demand.bytes), key=self.free, reverse=True)
        if len(fitting) < demand.count:
            return None
        return sorted(d.index for d in fitting[:demand.count])

    def why_not(self, demand: Demand) -> str:
        """"waiting for GPU 0: needs 14.2 GiB, 9.8 free (run 3 2.1 GiB)" -- for the device closest to fitting."""
        candidates = [d for d in self.devices if demand.pin is None or d.index == demand.pin]
        if demand.count > len(candidates):
            return (f"waiting: needs {demand.count} devices, this worker has {len(candidates)} "
                    f"({', '.join(str(d) for d in candidates)})")
        best = max(candidates, key=self.free)
        need = "each of " if demand.count > 1 else ""
        text = f"waiting for {best.name}: needs {need}{gib(demand.bytes)}, {max(0, self.free(best)) / GIB:.1f} free"
        if self.holders.get(best.index):
            text += f" (in use: {', '.join(self.holders[best.index])})"
        if demand.bytes > self.usable(best):
            text += f"; it can never fit there ({gib(best.total_bytes)} in all)"
        return text


    def blocking(self, demand: Demand) -> dict:
        """What ``why_not`` says, for the UI: the device closest to fitting, what the job needs, what
        is free there and who holds the rest ({"label", "ref", "bytes"} each)."""
        candidates = [d for d in self.devices if demand.pin is None or d.index == demand.pin] or self.devices
        best = max(candidates, key=self.free)
        return {"device": best.name, "kind": best.kind, "needs": int(demand.bytes), "free": max(0, self.free(best)),
                "total": best.total_bytes, "holders": list(self.held.get(best.index, []))}


def cuda_visible_devices(devices: list[Device], indices: list[int]) -> dict[str, str]:
    """The environment a child process gets so it sees only its GPUs (nothing for the CPU)."""
    if any(d.kind == GPU for d in devices) and indices:
        return {"CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in indices)}
    return {}


def devices_from_env() -> list[Device] | None:
    text = os.environ.get("FTS_WORKER_DEVICES")
    return parse_devices(text) if text else None
