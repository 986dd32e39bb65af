"""Before a run is queued: what it will need. Spec -> memory estimate -> verdict and fixes.

Used by the Train tab (live, as settings change) and by the training service (the estimate is
recorded on the run beside the measured peak). Reads config.json only: no weights, no torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from studio import estimate as est
from studio.methods import get_method
from studio.spec import RunSpec


@dataclass
class MemoryPlan:
    request: est.EstimateRequest | None
    estimate: est.Estimate | None
    capacity_bytes: int
    verdict: str  # fits | tight | does not fit | unknown
    suggestions: list[est.Suggestion] = field(default_factory=list)
    error: str | None = None


def model_config(model_ref: str, trust_remote_code: bool = False) -> dict[str, Any]:
    """The model's config.json. Popular Hub models come from the bundled table (instant, offline:
    the same config the Hub serves); everything else from the registry (built-ins, local folders,
    the Hub or its cache)."""
    from studio.models import registry

    try:
        return est.lookup_config(model_ref)
    except est.UnknownModel:
        return registry.inspect(model_ref, trust_remote_code=trust_remote_code).config


def estimate_request(spec: RunSpec, config: dict[str, Any], images_per_sample: int = 0,
                     gpu_dtype: str = "bf16") -> est.EstimateRequest:
    """Translate a run spec into the estimator's terms (for a GPU: ``auto`` precision means bf16)."""
    t = spec.train
    dtype = gpu_dtype if t.precision == "auto" else t.precision
    return est.EstimateRequest(
        config=config, **get_method(spec.method.name).estimator_fields(spec), dtype=dtype,
        batch_size=t.batch_size, grad_accum=t.grad_accum,
        seq_len=t.cutoff_len, gradient_checkpointing=t.gradient_checkpointing,
        max_pixels=spec.vision.max_pixels, images_per_sample=images_per_sample,
        tune_vision=spec.vision.vision_tower == "lora", num_gpus=t.num_processes,
        trainer="trl-sft")  # recipe.py trains with TRL's SFTTrainer


def images_per_sample(num_images: int, num_rows: int) -> int:
    return math.ceil(num_images / num_rows) if num_rows and num_images else 0


def dataset_images_per_sample(db, spec: RunSpec) -> int:
    """Images per row of the spec's dataset (0 for text data or a headless file)."""
    if not spec.data.dataset_id:
        return 0
    from studio.datasets.service import get_dataset

    try:
        d = get_dataset(db, spec.data.dataset_id)
    except LookupError:
        return 0
    return images_per_sample(d.num_images, d.num_rows)


def plan_memory(spec: RunSpec, capacity_bytes: int, images: int = 0) -> MemoryPlan:
    try:
        request = estimate_request(spec, model_config(spec.model, spec.trust_remote_code), images)
        estimate = est.estimate(request)
    except Exception as e:  # noqa: BLE001 - an estimate is advice; say why there is none
        return MemoryPlan(None, None, capacity_bytes, "unknown", error=f"{type(e).__name__}: {e}")
    verdict = est.verdict(estimate.total_bytes, capacity_bytes)
    fixes = est.suggestions(request, capacity_bytes) if verdict != "fits" else []
    return MemoryPlan(request, estimate, capacity_bytes, verdict, fixes)


def estimate_for_device(spec: RunSpec, precision: str, on_gpu: bool, runtime_baseline_bytes: int = 0,
                        images: int = 0) -> int | None:
    """The peak the training process should reach on the device it really runs on, comparable with
    what it measures: on GPU the estimator's full peak; on CPU only the parts that exist there,
    plus the process's own footprint before the model was loaded. None when no estimate exists."""
    try:
        request = estimate_request(spec, model_config(spec.model, spec.trust_remote_code), images, precision)
        request = request.with_(dtype=precision)
        if on_gpu:
            return int(est.estimate(request).total_bytes)
        return int(est.estimate_cpu_training(request, runtime_baseline_bytes).total_bytes)
    except Exception:  # noqa: BLE001 - an estimate never blocks a run
        return None


@dataclass
class EstimateCheck:
    run_id: int
    name: str
    model: str
    method: str
    estimated_bytes: int
    measured_bytes: int

    @property
    def error(self) -> float:
        """Relative error of the estimate against the measurement (+ = over-estimate)."""
        return self.estimated_bytes / self.measured_bytes - 1


def estimate_report(db) -> list[EstimateCheck]:
    """Every finished run that recorded both an estimate and a measured peak."""
    from studio.training import service

    return [EstimateCheck(r.id, r.name, r.model_ref, r.method, r.estimated_peak_bytes, r.measured_peak_bytes)
            for r in service.list_runs(db, limit=10_000) if r.estimated_peak_bytes and r.measured_peak_bytes]
