"""SQLAlchemy 2 models: the database describes files in the workspace.

Times are naive UTC (``utcnow()``) so SQLite and PostgreSQL store the same thing. Paths are
relative to the workspace so a workspace can be moved. Schema changes go through alembic
(``storage/migrations``), never ``create_all`` on an existing database.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class JobStatus:
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    FINISHED = (SUCCEEDED, FAILED, CANCELLED)


class Job(Base):
    """One unit of work for a worker: training, export, dataset stats, chat generation, ..."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=1)
    worker_id: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    exit_signal: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    pid: Mapped[int | None] = mapped_column(Integer)
    log_path: Mapped[str | None] = mapped_column(String(512))
    progress: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    __table_args__ = (Index("ix_jobs_status_priority", "status", "priority", "id"),)


class Dataset(Base):
    __tablename__ = "datasets"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(512), default="")
    format: Mapped[str] = mapped_column(String(32), default="")
    path: Mapped[str] = mapped_column(String(512), default="")
    num_rows: Mapped[int] = mapped_column(Integer, default=0)
    num_train: Mapped[int] = mapped_column(Integer, default=0)
    num_validation: Mapped[int] = mapped_column(Integer, default=0)
    num_images: Mapped[int] = mapped_column(Integer, default=0)
    num_skipped: Mapped[int] = mapped_column(Integer, default=0)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    has_images: Mapped[bool] = mapped_column(Boolean, default=False)
    info: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class ModelEntry(Base):
    """A model the user has used: built-in, Hub id or local folder, with its opt-ins."""

    __tablename__ = "models"
    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(512), unique=True)
    source: Mapped[str] = mapped_column(String(16))  # builtin | hub | local
    kind: Mapped[str] = mapped_column(String(16), default="text")  # text | vision-language
    trust_remote_code: Mapped[bool] = mapped_column(Boolean, default=False)
    local_path: Mapped[str | None] = mapped_column(String(512))
    info: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    model_ref: Mapped[str] = mapped_column(String(512))
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id", ondelete="SET NULL"))
    method: Mapped[str] = mapped_column(String(32))
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    output_dir: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    final_loss: Mapped[float | None] = mapped_column(Float)
    final_eval_loss: Mapped[float | None] = mapped_column(Float)
    estimated_peak_bytes: Mapped[int | None] = mapped_column(BigInteger)
    measured_peak_bytes: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(Text)
    # the worker's pre-flight refusal: [{"field", "message", "hint"}], shown in the Runs tab and the CLI
    problems: Mapped[list[dict[str, str]] | None] = mapped_column(JSON, nullable=True)
    # one entry per time a worker ran it: {started, ended, why, from_step, to_step, trigger, worker}
    # (studio.training.attempts); a run whose worker died is requeued and resumes, visibly
    attempts: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)

    metrics: Mapped[list["RunMetric"]] = relationship(back_populates="run", cascade="all, delete-orphan",
                                                      order_by="RunMetric.id")


class RunMetric(Base):
    __tablename__ = "run_metrics"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    time: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    stage: Mapped[str] = mapped_column(String(32), default="train")
    step: Mapped[int | None] = mapped_column(Integer)
    total_steps: Mapped[int | None] = mapped_column(Integer)
    epoch: Mapped[float | None] = mapped_column(Float)
    loss: Mapped[float | None] = mapped_column(Float)
    eval_loss: Mapped[float | None] = mapped_column(Float)
    learning_rate: Mapped[float | None] = mapped_column(Float)
    grad_norm: Mapped[float | None] = mapped_column(Float)
    tokens_per_s: Mapped[float | None] = mapped_column(Float)
    peak_memory_bytes: Mapped[int | None] = mapped_column(BigInteger)
    eta_s: Mapped[float | None] = mapped_column(Float)
    # dpo / kto / reward stages (TRL's rewards/margins, rewards/accuracies, logps/chosen, logps/rejected)
    reward_margin: Mapped[float | None] = mapped_column(Float)
    reward_accuracy: Mapped[float | None] = mapped_column(Float)
    logps_chosen: Mapped[float | None] = mapped_column(Float)
    logps_rejected: Mapped[float | None] = mapped_column(Float)

    run: Mapped[Run] = relationship(back_populates="metrics")


class Adapter(Base):
    __tablename__ = "adapters"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(String(200))
    method: Mapped[str] = mapped_column(String(32))
    base_model_ref: Mapped[str] = mapped_column(String(512))
    path: Mapped[str] = mapped_column(String(512))
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Export(Base):
    __tablename__ = "exports"
    id: Mapped[int] = mapped_column(primary_key=True)
    adapter_id: Mapped[int | None] = mapped_column(ForeignKey("adapters.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(16))  # merged | adapter
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    path: Mapped[str | None] = mapped_column(String(512))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    verified: Mapped[bool | None] = mapped_column(Boolean)
    verification: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Chat(Base):
    """A saved chat or batch comparison: base model, adapters, settings and every pane's turns."""

    __tablename__ = "chats"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200), default="")
    kind: Mapped[str] = mapped_column(String(16), default="chat")  # chat | compare
    base_model_ref: Mapped[str] = mapped_column(String(512))
    adapter_ids: Mapped[list[Any]] = mapped_column(default=list)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    transcript: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class Judgement(Base):
    """One blind A/B judgement in the Chat tab: the same prompt to two models (``base`` or
    ``adapter:<id>``), shown as A and B in random order; ``pick`` is a, b, tie or both_bad.
    ``model_a`` is the model that was shown as A. ``edited``: the better answer as the person fixed it."""

    __tablename__ = "judgements"
    id: Mapped[int] = mapped_column(primary_key=True)
    base_model_ref: Mapped[str] = mapped_column(String(512))
    system: Mapped[str] = mapped_column(Text, default="")
    prompt: Mapped[str] = mapped_column(Text)
    model_a: Mapped[str] = mapped_column(String(64))
    model_b: Mapped[str] = mapped_column(String(64))
    answer_a: Mapped[str] = mapped_column(Text)
    answer_b: Mapped[str] = mapped_column(Text)
    pick: Mapped[str] = mapped_column(String(16))
    edited: Mapped[str | None] = mapped_column(Text)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    batch: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)

    __table_args__ = (Index("ix_judgements_pair", "base_model_ref", "model_a", "model_b"),)
