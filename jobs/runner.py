"""Child-process entry point for isolated jobs: ``python -m jobs.runner JOB_ID OUTCOME_FILE``, or
``python -m jobs.runner --standby READY_FILE`` to import the training stack first and read the job from stdin
(``jobs.standby``).

The worker starts this in a fresh interpreter and its own process group, with stdout/stderr going
to the job's log file. The outcome (result or error) is written to OUTCOME_FILE; the exit code
tells the worker how it ended (0 ok, 3 cancelled, 1 error).
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import traceback

EXIT_OK, EXIT_ERROR, EXIT_CANCELLED = 0, 1, 3
WORKER_PID_ENV = "FTS_WORKER_PID"


def kill_group(proc) -> None:
    """The worker's side: SIGKILL a runner (a ``subprocess.Popen`` started in its own process group)
    with everything it started, and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def die_with_parent() -> None:
    """Ask Linux to SIGKILL us if the worker dies, so a killed worker leaves no orphan job.

    The worker may die between starting us and this call; then our parent is already someone else
    and the death signal would never come, so we check and leave at once."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass
    expected = os.environ.get(WORKER_PID_ENV)
    if expected and os.getppid() != int(expected):
        os._exit(EXIT_ERROR)


def execute(job_id: int, outcome_file: str) -> int:
    from jobs import oom, queue
    from jobs.context import JobCancelled, JobContext
    from jobs.kinds import get_kind
    from storage.db import Database

    db = Database.open(migrate=False)
    job = queue.get(db, job_id)
    ctx = JobContext(db=db, job_id=job.id, kind=job.kind, payload=dict(job.payload or {}))
    outcome: dict = {}
    try:
        outcome["result"] = get_kind(job.kind).load_handler()(ctx)
        code = EXIT_OK
    except JobCancelled as e:
        outcome["error"] = str(e)
        code = EXIT_CANCELLED
    except BaseException as e:  # noqa: BLE001 - everything goes to the log and the job row
        traceback.print_exc()
        outcome["error"] = f"{type(e).__name__}: {e}"
        if oom.is_out_of_memory(e):
            outcome[oom.RESULT_KEY] = oom.describe_exception(e)
        code = EXIT_ERROR
    with open(outcome_file, "w", encoding="utf-8") as f:
        json.dump(outcome, f, default=str)
    return code


def main() -> None:
    die_with_parent()
    from jobs import logsetup

    if sys.argv[1] == "--standby":  # started ahead of its job: see jobs.standby
        from jobs import standby

        standby.warm_up(ready_file=sys.argv[2])
        order = standby.wait_for_job()
        if order is None:
            os._exit(EXIT_OK)
        standby.adopt_job_output(order)
        job_id, outcome_file = int(order["job_id"]), order["outcome_file"]
    else:
        job_id, outcome_file = int(sys.argv[1]), sys.argv[2]
    logsetup.configure("job", stream=sys.stdout)
    code = execute(job_id, outcome_file)
    sys.stdout.flush()
    os._exit(code)  # skip slow interpreter teardown of torch & co; files are flushed above


if __name__ == "__main__":
    main()
