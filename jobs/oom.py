"""Out of memory, told apart from other failures of a job's child process.

A child runs out of memory in one of two ways: the framework raises (``torch.OutOfMemoryError``,
"CUDA out of memory", the CPU allocator's "can't allocate memory", Python's ``MemoryError``), or the
kernel's out-of-memory killer ends it with SIGKILL -- which nobody else sends a child the worker did
not kill itself and the user did not cancel. Either way the job's error starts with
``OUT_OF_MEMORY`` and its result says ``{"out_of_memory": {"step": N | None, "how": ...}}``, so the
job's domain (a training run) can react: retry with a memory fix, or say which fix to try.

``apply_test_memory_cap`` gives tests a real allocation failure on the CPU: a limit on the
process's private memory (RLIMIT_DATA) a given headroom above what it uses now.
"""
from __future__ import annotations

import os
import re
import traceback
from typing import Any

OUT_OF_MEMORY = "out of memory"  # the start of the error of every job that ran out of memory
RESULT_KEY = "out_of_memory"
TEST_HEADROOM_ENV = "FTS_TEST_MEMORY_HEADROOM_MB"  # tests only: RLIMIT_DATA this far above the current use

_MESSAGES = re.compile(r"out of memory|can't allocate memory|cannot allocate memory|OutOfMemory", re.IGNORECASE)


def is_out_of_memory(exc: BaseException) -> bool:
    """The exception (or one it was raised from) is an allocation failure of torch, CUDA or Python."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, MemoryError) or any(c.__name__ == "OutOfMemoryError" for c in type(exc).__mro__):
            return True
        if isinstance(exc, RuntimeError) and _MESSAGES.search(str(exc)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def trainer_step(exc: BaseException) -> int | None:
    """The optimizer step that was running when ``exc`` was raised: the training loop's own state
    (``self.state.global_step`` of the innermost frame that has one, e.g. a transformers Trainer),
    plus one. None when it was raised outside a training loop (loading the model, tokenising)."""
    step = None
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        state = getattr(frame.f_locals.get("self"), "state", None)
        done = getattr(state, "global_step", None)
        if isinstance(done, int):
            step = done + 1
    return step


def describe_exception(exc: BaseException) -> dict[str, Any]:
    return {"step": trainer_step(exc), "how": f"{type(exc).__name__}: {_first_line(exc)}"}


def killed_by_oom_killer() -> dict[str, Any]:
    return {"step": None, "killed": True, "how": "the job process was killed by SIGKILL, which nobody sent it "
                                                  "but the kernel's out-of-memory killer"}


def error_text(info: dict[str, Any]) -> str:
    """``out of memory at step 3: RuntimeError: DefaultCPUAllocator: can't allocate memory...``"""
    where = f" at step {info['step']}" if info.get("step") else ""
    return f"{OUT_OF_MEMORY}{where}: {info.get('how') or 'the job ran out of memory'}"


def out_of_memory_info(job: Any) -> dict[str, Any] | None:
    """What a finished job's row says about running out of memory (None: it did not)."""
    result = job.result if isinstance(job.result, dict) else {}
    info = result.get(RESULT_KEY)
    if info is None and (job.error or "").startswith(OUT_OF_MEMORY):
        info = {"step": None, "how": job.error}
    return info


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""


def apply_test_memory_cap() -> int | None:
    """Tests only (``FTS_TEST_MEMORY_HEADROOM_MB``): cap this process's private memory at what it
    uses now plus the headroom, so a larger allocation fails for real (torch raises). Returns the cap."""
    headroom = os.environ.get(TEST_HEADROOM_ENV)
    if not headroom:
        return None
    import resource

    cap = _vm_data_bytes() + int(float(headroom) * 2 ** 20)
    resource.setrlimit(resource.RLIMIT_DATA, (cap, resource.getrlimit(resource.RLIMIT_DATA)[1]))
    return cap


def _vm_data_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmData in /proc/self/status")
