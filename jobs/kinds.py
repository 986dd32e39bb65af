"""The table of job kinds a worker can run.

Handlers are named as ``"module:function"`` and imported only when a job of that kind runs, so
the worker starts fast and the UI process (which only enqueues) never imports torch.

``isolated`` kinds run in a fresh child interpreter (training, export: an OOM or crash kills the
job, not the worker). Others run inside the worker (chat engine keeps its model between jobs).
``on_finish`` runs in whichever process records the final status (worker or reaper) so domain rows
(a run, an export) never stay "running" after their job has ended.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class JobKind:
    name: str
    handler: str
    isolated: bool = False
    on_finish: str | None = None
    max_attempts: int = 1
    # when the worker died: "module:function" (db, job) -> (requeue?, note); None: attempts decide
    retry_after_worker_lost: str | None = None
    on_requeue: str | None = None  # (db, job) after the reaper put the job back in the queue
    # scheduling: "module:function" (db, job, device_kind) -> jobs.devices.Demand | None (None: no
    # memory to speak of); "module:function" (db, job) -> measured peak bytes of the running job
    demand: str | None = None
    measured: str | None = None
    exclusive: str | None = None  # at most one running job of this group per worker (one chat engine)
    priority: int = 0  # default queue priority: chat > export > training

    def load_handler(self) -> Callable[..., Any]:
        return _load(self.handler)

    def load(self, hook: str) -> Callable[..., Any] | None:
        dotted = getattr(self, hook)
        return _load(dotted) if dotted else None

    def load_on_finish(self) -> Callable[..., Any] | None:
        return _load(self.on_finish) if self.on_finish else None


def _load(dotted: str) -> Callable[..., Any]:
    module, _, attr = dotted.partition(":")
    return getattr(importlib.import_module(module), attr)


KINDS: dict[str, JobKind] = {}
# Default priorities (higher first; first come, first served within one): a chat message never
# waits behind queued runs, an export not behind queued training. A job can be moved up or down.
CHAT_PRIORITY, EXPORT_PRIORITY, TRAIN_PRIORITY = 5, 3, 0


def register(kind: JobKind) -> JobKind:
    KINDS[kind.name] = kind
    return kind


def get_kind(name: str) -> JobKind:
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(f"unknown job kind {name!r}; known: {', '.join(sorted(KINDS))}") from None


# Diagnostics: used by `python -m jobs.worker --selftest` and the queue/worker tests.
register(JobKind("system.echo", "jobs.system_jobs:echo"))
register(JobKind("system.sleep", "jobs.system_jobs:sleep", isolated=True))
register(JobKind("models.prepare", "jobs.system_jobs:prepare_model", isolated=True))

# The studio's work.
register(JobKind("train", "studio.training.job:run_training_job", isolated=True,
                 on_finish="studio.training.job:on_training_job_finished",
                 retry_after_worker_lost="studio.training.attempts:retry_after_worker_lost",
                 on_requeue="studio.training.attempts:on_requeued",
                 demand="studio.demands:training", measured="studio.demands:training_measured",
                 priority=TRAIN_PRIORITY))
register(JobKind("datasets.stats", "studio.datasets.stats_job:run_stats_job"))

# Chat testing: runs inside the worker, whose long-lived engine keeps the base model loaded.
register(JobKind("chat.message", "studio.inference.jobs:run_chat_job", demand="studio.demands:chat",
                 exclusive="chat", priority=CHAT_PRIORITY))
register(JobKind("chat.compare", "studio.inference.jobs:run_compare_job", demand="studio.demands:chat",
                 exclusive="chat", priority=CHAT_PRIORITY))
register(JobKind("export", "studio.export.job:run_export_job", isolated=True,
                 on_finish="studio.export.job:on_export_job_finished", demand="studio.demands:export",
                 priority=EXPORT_PRIORITY))
