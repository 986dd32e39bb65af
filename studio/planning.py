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
from studio.spec.stages import SEQUENCES_PER_ROW


@dataclass
class MemoryPlan:
    request: est.EstimateRequest | None
    estimate: est.Estimate | None
    capacity_bytes: int
    verdict: str  # fits | tight | does not fit | unknown
    suggestions: list[est.Suggestion] = field(default_factory=list)
    error: str | None = None
    checkpointing: "CheckpointingChoice | None" = None  # what gradient_checkpointing (auto) chose, and why


def model_config(model_ref: str, trust_remote_code: bool = False) -> dict[str, Any]:
    """The model's config.json. Popular Hub models come from the bundled table (instant, offline:
    the same config the Hub serves); everything else from the registry (built-ins, local folders,
    the Hub or its cache)."""
    from studio.models import registry

    try:
        return est.lookup_config(model_ref)
    except est.UnknownModel:
        return registry.inspect(model_ref, trust_remote_code=trust_remote_code).config


def is_vision_config(config: dict[str, Any]) -> bool:
    return "vision_config" in config


def estimate_request(spec: RunSpec, config: dict[str, Any], images_per_sample: int = 0,
                     gpu_dtype: str = "bf16", gradient_checkpointing: bool | None = None,
                     on_gpu: bool = True) -> est.EstimateRequest:
    """Translate a run spec into the estimator's terms (for a GPU: ``auto`` precision means bf16).
    ``gradient_checkpointing``: the choice for a spec that says ``auto`` (None: on, the safe side)."""
    t = spec.train
    dtype = gpu_dtype if t.precision == "auto" else t.precision
    if gradient_checkpointing is None:
        gradient_checkpointing = True if t.gradient_checkpointing == "auto" else bool(t.gradient_checkpointing)
    return est.EstimateRequest(
        config=config, **get_method(spec.method.name).estimator_fields(spec), dtype=dtype,
        batch_size=t.batch_size * SEQUENCES_PER_ROW[spec.stage.name], grad_accum=t.grad_accum,
        seq_len=t.cutoff_len, gradient_checkpointing=gradient_checkpointing,
        max_pixels=spec.vision.max_pixels, images_per_sample=images_per_sample,
        tune_vision=spec.vision.vision_tower == "lora", num_gpus=t.num_processes,
        padding_free=padding_free_applies(spec, config)[0],
        # the trainer's loss path: TRL's fused LM head where Triton runs it (GPU); elsewhere logits at the
        # labelled positions + cross-entropy (studio.training.trainer), which "hf" bounds from above
        trainer="trl-sft" if on_gpu else "hf")


def padding_free_applies(spec: RunSpec, config: dict[str, Any]) -> tuple[bool, str]:
    """(padding-free batches?, why) for this spec and model."""
    if spec.train.packing:
        return True, "packing: rows packed into cut-off blocks, each with its own positions"
    if not spec.train.padding_free:
        return False, "padding_free is off in the spec: padded batches"
    method = get_method(spec.method.name)
    if not method.padding_free:
        return False, f"{method.label} prepends virtual tokens to each row: batches stay padded"
    if getattr(spec.method, "num_virtual_tokens", None):  # prompt/prefix tuning, P-tuning
        return False, (f"{spec.method.name}: its virtual tokens go before each row, so batches stay padded")
    if is_vision_config(config):
        # Qwen2.5-VL numbers its 3-D (time, height, width) rope positions per sequence from input_ids and the
        # image grid (get_rope_index); on a joined row it would number them across rows. transformers 5 takes a
        # joined VL row only with caller-built [4, 1, N] positions (restarting text positions + each row's own
        # 3-D positions); the studio's VL collator does not build them (yet), so VL batches stay padded.
        return False, ("vision-language model: padded batches (its 3-D rope positions are numbered per sequence; "
                       "joined rows would need them built row by row, which the studio does not do yet)")
    return True, "text model: rows joined end to end with restarting positions (no padding)"


@dataclass(frozen=True)
class CheckpointingChoice:
    """What ``train.gradient_checkpointing`` means for one run on one device, and why."""

    enabled: bool
    requested: Any  # "auto" | True | False
    reason: str
    without_bytes: int | None = None  # estimated peak without checkpointing
    with_bytes: int | None = None
    capacity_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def cpu_capacity_bytes() -> int:
    """RAM a CPU run can use now: the kernel's estimate of memory available without swapping."""
    import psutil

    return int(psutil.virtual_memory().available)


def token_lengths(lengths: list[int]) -> est.TokenLengths:
    """Exact statistics of tokenised rows: one histogram bin per distinct length."""
    from collections import Counter

    counts_by_length = Counter(lengths)
    edges: list[int] = []
    counts: list[int] = []
    for length in sorted(counts_by_length):
        if edges and edges[-1] != length:
            counts.append(0)  # the gap between two lengths
        if not edges or edges[-1] != length:
            edges.append(length)
        counts.append(counts_by_length[length])
        edges.append(length + 1)
    return est.TokenLengths(rows=len(lengths), max_tokens=max(lengths), mean_tokens=sum(lengths) / len(lengths),
                            edges=tuple(edges), counts=tuple(counts))


def _peak(request: est.EstimateRequest, on_gpu: bool) -> est.Estimate:
    if request.data is not None:
        from studio.estimate.estimator import for_data

        run, _, _ = for_data(request)
    else:
        run = request
    return est.estimate(run) if on_gpu else est.estimate_cpu_training(run)


def choose_gradient_checkpointing(spec: RunSpec, capacity_bytes: int, on_gpu: bool, config: dict[str, Any] | None = None,
                                  data: Any = None, precision: str = "bf16", images: int = 0) -> CheckpointingChoice:
    """Resolve ``train.gradient_checkpointing``. ``auto``: off when the run's estimated peak without
    it fits ``capacity_bytes`` with margin (the estimate's error band, else 10%), on otherwise.
    ``data``: the rows' token statistics (``TokenLengths``, a stats dict) for the longest real batch;
    None: every batch at the cut-off. Torch-free: the Train tab shows the same choice the worker makes
    (the worker passes the device's memory: a GPU's total, or the RAM available)."""
    requested = spec.train.gradient_checkpointing
    device = "GPU memory" if on_gpu else "available RAM"
    if requested != "auto":
        return CheckpointingChoice(bool(requested), requested, f"{'on' if requested else 'off'}: set in the spec")
    try:
        config = config if config is not None else model_config(spec.model, spec.trust_remote_code)
        if data is not None and not isinstance(data, est.TokenLengths):
            data = est.TokenLengths.from_stats(data)
        request = estimate_request(spec, config, images, precision, False, on_gpu).with_(dtype=precision, data=data)
        without = _peak(request, on_gpu)
        with_ = _peak(request.with_(gradient_checkpointing=True), on_gpu)
    except Exception as e:  # noqa: BLE001 - no estimate: the setting that needs less memory
        return CheckpointingChoice(True, "auto", f"on: no memory estimate ({type(e).__name__}: {e})",
                                   capacity_bytes=capacity_bytes)
    gib = lambda b: f"{b / est.GIB:.1f} GiB"  # noqa: E731
    fits = est.verdict(without.total_bytes, capacity_bytes, without.band) == "fits"
    if fits:
        reason = (f"off: the run needs about {gib(without.total_bytes)} without it, which fits the "
                  f"{gib(capacity_bytes)} of {device} with margin (faster: nothing is recomputed)")
    else:
        reason = (f"on: without it the run needs about {gib(without.total_bytes)}, more than the "
                  f"{gib(capacity_bytes)} of {device} allow with margin; with it about {gib(with_.total_bytes)}")
    return CheckpointingChoice(not fits, "auto", reason, int(without.total_bytes), int(with_.total_bytes),
                               int(capacity_bytes))


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


def plan_memory(spec: RunSpec, capacity_bytes: int, images: int = 0, data: Any = None) -> MemoryPlan:
    """The Train tab's plan for a GPU of ``capacity_bytes``; with ``gradient_checkpointing: auto``
    the estimate follows what auto chooses for that GPU (``plan.checkpointing`` says what and why).
    ``data``: the dataset's token statistics; the estimate is then for its longest real batch, with
    the worst case at the cut-off beside it (``estimate.worst_case_bytes``, ``rows_cut``)."""
    try:
        config = model_config(spec.model, spec.trust_remote_code)
        lengths = est.TokenLengths.from_stats(data) if data is not None else None
        choice = choose_gradient_checkpointing(spec, capacity_bytes, on_gpu=True, config=config, images=images,
                                               data=lengths)
        request = estimate_request(spec, config, images, gradient_checkpointing=choice.enabled).with_(data=lengths)
        estimate = est.estimate(request)
    except Exception as e:  # noqa: BLE001 - an estimate is advice; say why there is none
        return MemoryPlan(None, None, capacity_bytes, "unknown", error=f"{type(e).__name__}: {e}")
    verdict = est.verdict(estimate.total_bytes, capacity_bytes, estimate.band)
    fixes = est.suggestions(request, capacity_bytes) if verdict != "fits" else []
    return MemoryPlan(request, estimate, capacity_bytes, verdict, fixes, checkpointing=choice)


def estimate_for_device(spec: RunSpec, precision: str, on_gpu: bool, runtime_baseline_bytes: int = 0,
                        images: int = 0, capacity_bytes: int | None = None) -> int | None:
    """The peak the training process should reach on the device it really runs on, comparable with
    what it measures: on GPU the estimator's full peak; on CPU only the parts that exist there,
    plus the process's own footprint before the model was loaded. None when no estimate exists."""
    try:
        config = model_config(spec.model, spec.trust_remote_code)
        # ``capacity_bytes``: where the caller is not on the training device (the web process, which
        # must not import torch) it names the GPU to plan for; else this machine's own
        capacity = capacity_bytes or (gpu_total_bytes() if on_gpu else cpu_capacity_bytes())
        choice = choose_gradient_checkpointing(spec, capacity, on_gpu, config, precision=precision, images=images)
        request = estimate_request(spec, config, images, precision, choice.enabled, on_gpu).with_(dtype=precision)
        if on_gpu:
            return int(est.estimate(request).total_bytes)
        return int(est.estimate_cpu_training(request, runtime_baseline_bytes).total_bytes)
    except Exception:  # noqa: BLE001 - an estimate never blocks a run
        return None


def cpu_plan_text(spec: RunSpec, images: int = 0) -> str:
    """The same run trained on a CPU, against this machine's available RAM: the Train tab shows it
    beside the GPU bar, since a studio without a GPU worker trains on the CPU."""
    precision = "bf16" if spec.train.precision == "bf16" else "fp32"
    peak = estimate_for_device(spec, precision, on_gpu=False, images=images)
    if peak is None:
        return ""
    ram = cpu_capacity_bytes()
    verdict = "fits" if peak <= ram * 0.9 else "does not fit"
    return (f"On a CPU ({precision}): about {peak / est.GIB:.1f} GiB of RAM; this machine has "
            f"{ram / est.GIB:.1f} GiB available — {verdict}.")


def gpu_total_bytes() -> int:
    """Total memory of the first CUDA device (imports torch: the worker's side only)."""
    import torch

    return int(torch.cuda.get_device_properties(0).total_memory)


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
