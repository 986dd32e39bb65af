"""Peak memory on CPU is the training process's own, not its parent's."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_child_process_does_not_report_its_parents_memory_as_its_peak():
    """``ru_maxrss`` survives exec: a child forked from a big worker reported the worker's size.
    The child's peak must be its own (Linux VmHWM), far below the 1.5 GiB its parent holds."""
    ballast = bytearray(1536 * 2**20)  # touched: resident in this (parent) process
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    code = "from studio.training.device import peak_memory_bytes; print(peak_memory_bytes())"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    peak = int(out.stdout.strip().splitlines()[-1])
    del ballast
    assert peak < 1024 * 2**20, f"child reported {peak / 2**20:.0f} MiB: its parent's memory, not its own"
