"""Several training processes (DDP): the job launches ``torchrun`` and every rank runs the recipe.

    python -m torch.distributed.run --standalone --nproc_per_node=N -m studio.training.distributed RUN JOB OUT

torchrun, not ``accelerate launch``: on CPU ``accelerate launch --cpu --num_processes 2`` silently
runs a single process (PLATFORM.md). Rank 0 reports progress and metrics to the database, decides
on cancellation (broadcast to all ranks so they stop at the same step), writes checkpoints' markers
and the adapter, and leaves its ``TrainResult`` as JSON for the job. torchrun and the ranks stay in
the job's process group, so a cancel that escalates to a kill, or a dying worker, takes them all.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

RESULT_FILE = ".distributed-result.json"


def torchrun_command(run_id: int, job_id: int, nproc: int, result_file: Path) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "studio.training.distributed", str(run_id), str(job_id), str(result_file)]


def launch(ctx: Any, run_id: int, nproc: int):
    """Run the recipe in ``nproc`` processes and return rank 0's TrainResult."""
    from studio.training.recipe import TrainResult

    result_file = ctx.workspace.run_dir(run_id) / RESULT_FILE
    result_file.unlink(missing_ok=True)
    ctx.progress(0.0, f"starting {nproc} training processes", stage="load")
    env = {**os.environ, "FTS_WORKSPACE": str(ctx.db.settings.workspace), "FTS_DB_URL": ctx.db.settings.db_url}
    code = subprocess.call(torchrun_command(run_id, ctx.job_id, nproc, result_file), env=env)
    if code != 0 or not result_file.exists():
        raise RuntimeError(f"distributed training exited with code {code}; the job log has every rank's output")
    data = json.loads(result_file.read_text(encoding="utf-8"))
    result_file.unlink(missing_ok=True)
    return TrainResult(**data)


def rank_main(run_id: int, job_id: int, result_file: Path) -> None:
    from jobs.context import JobContext
    from storage.db import Database
    from storage.models import Run
    from studio.training.recipe import train, write_text_atomic
    from studio.training.reporting import DbReporter, NullReporter
    from studio.spec import RunSpec

    rank = int(os.environ.get("RANK", "0"))
    db = Database.open(migrate=False)
    with db.session() as s:
        spec = RunSpec.model_validate(s.get(Run, run_id).spec)
    reporter = DbReporter(JobContext(db, job_id, "train", {"run_id": run_id}), run_id) if rank == 0 else NullReporter()
    result = train(spec, db.workspace.run_dir(run_id), reporter, db=db, is_main=rank == 0)
    if rank == 0:
        write_text_atomic(result_file, json.dumps(result.to_dict(), default=str))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank{os.environ.get('RANK', '0')} %(levelname)s "
                                                   "%(name)s: %(message)s", stream=sys.stdout)
    rank_main(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))
