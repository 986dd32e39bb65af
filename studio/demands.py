"""What each kind of job needs from a worker's devices: the estimator's answer for the device
kind the worker has (``jobs.devices``), and the measured peak once a running job has one.

Named by the job table (``jobs.kinds``) as hooks, called by the worker's scheduler. Reads
config.json and database rows only: no torch, no weights.
"""
from __future__ import annotations

import logging
from typing import Any

from jobs.devices import GPU, Demand
from storage.models import Adapter, Chat, Export, Job, Run

log = logging.getLogger("studio.demands")

# A training child's own footprint on CPU before its model loads (measured: RSS 895 MiB after the
# training stack's imports; see studio.training.job.record_device_estimate).
CPU_TRAINING_PROCESS_BYTES = 900 * 2 ** 20
CHAT_CONTEXT_TOKENS = 4096  # the engine's KV cache is sized for a long chat, not the first message


def training(db: Any, job: Job, device_kind: str) -> Demand | None:
    from studio.planning import dataset_images_per_sample, estimate_for_device
    from studio.spec import RunSpec

    run = _run_of(db, job)
    if run is None:
        return None
    spec = RunSpec.model_validate(run.spec)
    on_gpu = device_kind == GPU
    # "auto" is bf16 on a GPU; on a CPU it may be fp32 (AVX2-only machines): assume the larger
    precision = spec.train.precision if spec.train.precision != "auto" else ("bf16" if on_gpu else "fp32")
    baseline, images = 0 if on_gpu else CPU_TRAINING_PROCESS_BYTES, dataset_images_per_sample(db, spec)
    estimate = (estimate_for_device(spec, precision, on_gpu, baseline, images)
                or _plain_estimate(spec, precision, on_gpu, baseline, images) or run.estimated_peak_bytes or 0)
    processes = spec.train.num_processes
    if on_gpu:
        return Demand(estimate, count=processes, label=f"run {run.id}", ref=f"run:{run.id}")
    # every process holds its own copy in RAM
    return Demand(estimate * processes, label=f"run {run.id}", ref=f"run:{run.id}")


def _plain_estimate(spec: Any, precision: str, on_gpu: bool, baseline: int, images: int) -> int | None:
    """The estimator's peak for the spec as written, without asking this machine about its devices
    (``estimate_for_device`` may: a worker scheduling for GPUs it declared, or for a GPU other than
    the first, must not depend on that)."""
    from studio import estimate as est
    from studio.planning import estimate_request, model_config

    try:
        request = estimate_request(spec, model_config(spec.model, spec.trust_remote_code), images, precision)
        request = request.with_(dtype=precision)
        return int(est.estimate(request).total_bytes if on_gpu else
                   est.estimate_cpu_training(request, baseline).total_bytes)
    except Exception as e:  # noqa: BLE001 - no estimate: fall back to the run's recorded one
        log.warning("no training estimate for %s: %s", spec.model, e)
        return None


def training_measured(db: Any, job: Job) -> int | None:
    """The run's measured peak (recorded live by the training process), once it has one."""
    run = _run_of(db, job)
    return run.measured_peak_bytes if run is not None else None


def chat(db: Any, job: Job, device_kind: str) -> Demand | None:
    """The chat engine's model, on the engine's device (the first GPU, or the CPU). A chat the user
    sent to the CPU (``payload.device``) takes nothing of a GPU worker's budget."""
    if (job.payload or {}).get("device") == "cpu" and device_kind == GPU:
        return None
    with db.session() as s:
        row = s.get(Chat, (job.payload or {}).get("chat_id"))
        ref = row.base_model_ref if row is not None else None
    if ref is None:
        return None
    nbytes = chat_model_bytes(ref, device_kind)
    return Demand(nbytes, pin=0, label="chat") if nbytes is not None else None


def chat_model_bytes(ref: str, device_kind: str) -> int | None:
    """Memory the chat engine holds with ``ref`` loaded (weights, KV cache, scratch)."""
    from studio import estimate as est
    from studio.planning import model_config

    try:
        config = model_config(ref)
        on_gpu = device_kind == GPU
        e = est.estimate_inference(config, context_len=CHAT_CONTEXT_TOKENS, dtype="bf16" if on_gpu else "fp32")
        return int(e.total_bytes - (0 if on_gpu else e.context_bytes))  # no CUDA context on the CPU
    except Exception as e:  # noqa: BLE001 - no estimate: the job is not held back by one
        log.warning("no chat memory estimate for %s: %s", ref, e)
        return None


def export(db: Any, job: Job, device_kind: str) -> Demand | None:
    """A merge holds the base model in full precision plus the merged copy it verifies against."""
    with db.session() as s:
        row = s.get(Export, (job.payload or {}).get("export_id"))
        adapter = s.get(Adapter, row.adapter_id) if row is not None and row.adapter_id is not None else None
        ref = adapter.base_model_ref if adapter is not None else None
    if ref is None:
        return None
    one = chat_model_bytes(ref, "cpu")  # fp32 weights, no CUDA context
    export_id = job.payload.get("export_id")
    return Demand(2 * one, label=f"export {export_id}", ref=f"export:{export_id}") if one else None


def _run_of(db: Any, job: Job) -> Run | None:
    from sqlalchemy import select

    with db.session() as s:
        run = s.get(Run, (job.payload or {}).get("run_id"))
        return run or s.execute(select(Run).where(Run.job_id == job.id)).scalar()
