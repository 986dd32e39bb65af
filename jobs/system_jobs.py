"""Small built-in jobs: diagnostics that exercise the queue, and built-in model preparation."""
from __future__ import annotations

import os
import signal
import time

from jobs.context import JobContext


def echo(ctx: JobContext) -> dict:
    """Append one line per execution to a file, so tests can count how often each job ran."""
    line = f"{ctx.job_id} {os.getpid()} {ctx.payload.get('message', '')}\n"
    with open(ctx.workspace.root / "echo.log", "a", encoding="utf-8") as f:
        f.write(line)
    return {"echo": ctx.payload.get("message", "")}


def sleep(ctx: JobContext) -> dict:
    """Sleep in small steps; honours cancel unless told to ignore it (tests the kill path)."""
    seconds = float(ctx.payload.get("seconds", 1.0))
    print(f"job {ctx.job_id}: sleeping {seconds} s in process {os.getpid()}", flush=True)  # to the job's log
    if ctx.payload.get("ignore_cancel"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if ctx.payload.get("spawn_grandchild"):
        # A grandchild in the same process group: proves cancel kills the whole group.
        import subprocess
        import sys
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        (ctx.workspace.root / f"grandchild-{ctx.job_id}.pid").write_text(str(child.pid))
    if ctx.payload.get("allocate_mb"):  # tests: a real allocation failure under a memory cap
        from jobs import oom

        oom.apply_test_memory_cap()
        ctx.payload["held"] = bytearray(int(ctx.payload["allocate_mb"]) * 2 ** 20)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not ctx.payload.get("ignore_cancel"):
            ctx.check_cancel()
        ctx.progress(1 - (deadline - time.monotonic()) / seconds)
        time.sleep(0.1)
    return {"slept": seconds}


def prepare_model(ctx: JobContext) -> dict:
    from studio.models import registry

    ref = ctx.payload["ref"]
    path = registry.prepare(ref, progress=lambda f, m: ctx.progress(f, m))
    ctx.progress(1.0, f"{ref} is ready")
    return {"path": str(path)}
