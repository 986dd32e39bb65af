"""Does it fit? A verdict against a GPU's capacity, and changes that would make it fit."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Literal

from studio.estimate.calibration import ErrorBand, band_of_all
from studio.estimate.estimator import estimate
from studio.estimate.request import GIB, Estimate, EstimateRequest

Verdict = Literal["fits", "tight", "does not fit"]
FIT_RATIO = 0.90  # without a known error band: below 90% of the card fits
AUTO = "auto"
MIB = 1024 ** 2
MIN_GAIN = 0.02  # a combined plan only takes changes that save at least 2% each


@dataclass(frozen=True)
class GpuCard:
    """A GPU and its memory as ``nvidia-smi`` reports it (MiB)."""

    name: str
    mib: int

    @property
    def capacity_bytes(self) -> int:
        return self.mib * MIB

    @property
    def nominal_gb(self) -> int:
        return int(self.name.rsplit(" ", 2)[-2])


GPU_CARDS: tuple[GpuCard, ...] = (
    GpuCard("RTX 4060 8 GB", 8188),
    GpuCard("RTX 3060 12 GB", 12288),
    GpuCard("T4 16 GB", 15360),
    GpuCard("RTX 4080 16 GB", 16376),
    GpuCard("RTX 3090 24 GB", 24576),
    GpuCard("RTX 4090 24 GB", 24564),
    GpuCard("L4 24 GB", 23034),
    GpuCard("A10G 24 GB", 23028),
    GpuCard("A100 40 GB", 40960),
    GpuCard("L40S 48 GB", 46068),
    GpuCard("RTX A6000 48 GB", 49140),
    GpuCard("A100 80 GB", 81920),
    GpuCard("H100 80 GB", 81559),
    GpuCard("H200 141 GB", 143771),
)


def find_card(name: str) -> GpuCard:
    """A card by (case-insensitive) substring, e.g. "4090", "a100 80", "h200"."""
    key = name.lower().replace("gb", "").strip()
    hits = [c for c in GPU_CARDS if key in c.name.lower()]
    if not hits:
        raise KeyError(f"unknown GPU {name!r}; known: {', '.join(c.name for c in GPU_CARDS)}")
    return hits[0]


def verdict(total_bytes: int, capacity_bytes: int, band: ErrorBand | None | str = AUTO) -> Verdict:
    """``fits`` when the upper edge of the error band fits on the card, ``tight`` when only the
    estimate does, else ``does not fit``. ``band``: the estimate's own (``Estimate.band``); by
    default the overall band of the published runs; ``None``: no band, fits below 90%."""
    if band == AUTO:
        band = band_of_all()
    upper = band.upper(total_bytes) if band else total_bytes / FIT_RATIO
    if upper <= capacity_bytes:
        return "fits"
    return "tight" if total_bytes <= capacity_bytes else "does not fit"


def estimate_verdict(est: Estimate, capacity_bytes: int) -> Verdict:
    return verdict(est.total_bytes, capacity_bytes, est.band)


def smallest_card(est: Estimate) -> GpuCard | None:
    """The smallest listed card the estimate fits on (under 90%)."""
    for card in sorted(GPU_CARDS, key=lambda c: c.mib):
        if estimate_verdict(est, card.capacity_bytes) == "fits":
            return card
    return None


@dataclass(frozen=True)
class Suggestion:
    """One concrete change, the request it gives and that request's estimate."""

    change: str
    request: EstimateRequest
    estimate: Estimate
    verdict: Verdict

    def line(self) -> str:
        return f"{self.change}: {self.estimate.total_gib:.1f} GiB ({self.verdict})"


Candidate = Callable[[EstimateRequest, int], "tuple[str, EstimateRequest] | None"]


def _fits(req: EstimateRequest, capacity: int) -> bool:
    return estimate_verdict(estimate(req), capacity) == "fits"


def _largest_fitting(values: list[int], make: Callable[[int], EstimateRequest], capacity: int) -> int:
    """The largest of the ascending ``values`` whose request fits (binary search: the estimate grows
    with each of these settings); the smallest value when none fits."""
    lo, hi, best = 0, len(values) - 1, values[0]
    while lo <= hi:
        mid = (lo + hi) // 2
        if _fits(make(values[mid]), capacity):
            best, lo = values[mid], mid + 1
        else:
            hi = mid - 1
    return best


def _gradient_checkpointing(req, capacity):
    if not req.gradient_checkpointing:
        return "enable gradient checkpointing", req.with_(gradient_checkpointing=True)
    return None


def _qlora(req, capacity):
    if req.method in ("lora", "dora", "adalora"):
        return "switch to QLoRA 4-bit (NF4, double quantization)", req.with_(method="qlora", quant_bits=4, double_quant=True)
    if req.method == "qlora" and req.quant_bits == 8:
        return "use 4-bit instead of 8-bit quantization", req.with_(quant_bits=4, double_quant=True)
    if req.method == "full":
        return "use QLoRA 4-bit instead of full fine-tuning", req.with_(method="qlora", quant_bits=4, double_quant=True)
    return None


def _optimizer(req, capacity):
    if req.optimizer == "adamw":
        return "use the 8-bit AdamW optimizer (paged)", req.with_(optimizer="paged_adamw_8bit")
    return None


def _batch(req, capacity):
    if req.batch_size <= 1:
        return None
    b = _largest_fitting(list(range(1, req.batch_size)), lambda v: req.with_(batch_size=v), capacity)
    accum = -(-req.batch_size * req.grad_accum // b)
    return (f"batch size {b} with gradient accumulation {accum} (effective batch {b * accum} per GPU kept)",
            req.with_(batch_size=b, grad_accum=accum))


def _seq(req, capacity):
    if req.seq_len <= 256:
        return None
    values = list(range(256, req.seq_len, 256)) or [256]
    s = _largest_fitting(values, lambda v: req.with_(seq_len=v), capacity)
    return f"shorter cut-off: {s} tokens", req.with_(seq_len=s)


def _pixels(req, capacity):
    if not req.is_vision or req.images_per_sample <= 0:
        return None
    tokens = req.max_pixels // (28 * 28)
    if tokens <= 64:
        return None
    values = list(range(64, tokens, 64)) or [64]
    t = _largest_fitting(values, lambda v: req.with_(max_pixels=v * 28 * 28), capacity)
    return f"lower max_pixels to {t * 28 * 28} ({t} tokens per image)", req.with_(max_pixels=t * 28 * 28)


def _attention(req, capacity):
    if req.attention == "eager":
        return "use sdpa attention instead of eager", req.with_(attention="sdpa")
    return None


def _vision(req, capacity):
    if req.tune_vision:
        return "keep the vision tower frozen", req.with_(tune_vision=False)
    return None


CANDIDATES: tuple[Candidate, ...] = (_gradient_checkpointing, _attention, _optimizer, _qlora, _batch, _seq,
                                     _pixels, _vision)


def suggestions(req: EstimateRequest, capacity_bytes: int) -> list[Suggestion]:
    """Changes that lower the estimate, each with its new estimate. Those that fit come first, the
    least disruptive first (``CANDIDATES`` order: memory savers before changes to batch, cut-off or
    images). A combined plan (changes applied in that order until it fits) is added when it fits
    with fewer sacrifices than any single change, or when no single change fits."""
    base = estimate(req).total_bytes
    ranked = []
    for rank, candidate in enumerate(CANDIDATES):
        proposal = candidate(req, capacity_bytes)
        if proposal is None:
            continue
        change, new = proposal
        est = estimate(new)
        if est.total_bytes < base:
            ranked.append((rank, Suggestion(change, new, est, estimate_verdict(est, capacity_bytes))))
    combined = _combined(req, capacity_bytes)
    if combined and combined[1].change.count(";") >= 1:
        best_single = min((r for r, s in ranked if s.verdict == "fits"), default=len(CANDIDATES))
        if combined[0] < best_single or combined[1].verdict == "fits" and best_single == len(CANDIDATES):
            ranked.append(combined)
        elif not any(s.verdict == "fits" for _, s in ranked):
            ranked.append(combined)
    ranked.sort(key=lambda rs: (rs[1].verdict != "fits", rs[0], rs[1].estimate.total_bytes))
    return [s for _, s in ranked]


def _combined(req: EstimateRequest, capacity: int) -> tuple[int, Suggestion] | None:
    """Apply the candidates in order until the request fits; (rank of the last change, plan)."""
    changes, current, last = [], req, -1
    for rank, candidate in enumerate(CANDIDATES):
        proposal = candidate(current, capacity)
        if proposal is None:
            continue
        change, new = proposal
        if estimate(new).total_bytes < (1 - MIN_GAIN) * estimate(current).total_bytes:
            changes.append(change)
            current, last = new, rank
            if _fits(current, capacity):
                break
    if not changes:
        return None
    est = estimate(current)
    plan = Suggestion("together: " + "; ".join(changes), current, est, estimate_verdict(est, capacity))
    return last + 0.5, plan


def describe(req: EstimateRequest, capacity_bytes: int) -> str:
    """A verdict line plus the suggestions, for people."""
    est = estimate(req)
    v = estimate_verdict(est, capacity_bytes)
    band = f" ({est.band.text()}: up to {est.upper_bytes / GIB:.1f} GiB)" if est.band else ""
    lines = [f"{est.total_gib:.1f} GiB{band} of {capacity_bytes / GIB:.1f} GiB: {v}"]
    if est.worst_case_bytes is not None and est.worst_case_bytes != est.total_bytes:
        lines.append(f"  worst case at the cut-off: {est.worst_case_bytes / GIB:.1f} GiB "
                     f"({estimate_verdict(replace(est, total_bytes=est.worst_case_bytes), capacity_bytes)})")
    if v != "fits":
        lines += [f"  - {s.line()}" for s in suggestions(req, capacity_bytes)]
    return "\n".join(lines)
