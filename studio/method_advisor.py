"""Which method to use: the model, the device (a GPU card or this CPU's RAM) and the dataset's size and
token lengths in, the methods of the table that fit ranked, each with its reason, out.

The rules are the field's rules of thumb, stated in the reasons so a user can disagree with them:
- memory decides first: a method whose estimated peak does not fit the device is never recommended
  (the estimator's verdict, with its error band); "fits only in 4-bit" makes QLoRA the answer;
- the data decides the capacity: few rows overfit methods with many trainable parameters (full
  fine-tuning, freeze tuning), so small data favours LoRA r8, IA3, VeRA or prompt tuning; large data
  favours more capacity (LoRA r64, full fine-tuning where it fits);
- long rows (thousands of tokens) favour LongLoRA-style training of embeddings and norms;
- vision-language models only get the methods the table marks VL-capable.
Reads config.json only (no weights, no torch).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from studio import estimate as est
from studio.methods import METHODS
from studio.planning import estimate_request
from studio.spec import RunSpec

SMALL_DATA, LARGE_DATA = 1_000, 20_000  # rows
LONG_ROWS = 2_048  # tokens (mean row length) from which longer-context training is worth it
# (method, preset) candidates: each method's default, and LoRA's lighter / stronger presets.
CANDIDATES = [(name, m.default_preset) for name, m in METHODS.items()] + [("lora", "light"), ("lora", "strong")]


@dataclass(frozen=True)
class Advice:
    method: str
    preset: str
    score: float
    fits: str  # "fits" | "tight" | "does not fit" | "unknown"
    peak_bytes: int | None
    trainable: int | None
    reasons: list[str]

    @property
    def key(self) -> str:
        return f"{self.method}:{self.preset}"


PROMPT_METHODS = ("prompt_tuning", "prefix_tuning", "p_tuning")
VECTOR_METHODS = ("ia3", "vera", "bitfit", "lokr")
HEAVY_METHODS = ("full", "freeze", "longlora")
LARGE_MODEL = 10e9  # parameters: prompt tuning matches fine-tuning only from about this size (Lester et al.)


def data_reason(name: str, preset: str, rows: int | None, trainable: int | None, total: int | None) -> tuple[float, str]:
    """(score, reason) of a method for the dataset's size."""
    share = trainable / total if trainable and total else 0.0
    key = f"{name}:{preset}"
    if name in PROMPT_METHODS and (total or 0) < LARGE_MODEL:
        return 0.5, "prompt-style methods match fine-tuning only on models above ~10B parameters"
    if rows is None:
        return (3.0 if key == "lora:balanced" else 1.0), "dataset size unknown: LoRA r16 is the safe default"
    if rows < SMALL_DATA:
        if name in HEAVY_METHODS:
            return -2.0, f"{rows} rows: {share:.1%} of the model trainable overfits such small data"
        if key == "lora:light":
            return 3.0, f"{rows} rows: LoRA r8 on attention overfits less than full fine-tuning or higher ranks"
        if name in VECTOR_METHODS or name in PROMPT_METHODS:
            return 2.5, f"{rows} rows: very few trainable parameters ({trainable or 0:,}) overfit little"
        return 1.5, f"{rows} rows: moderate capacity; watch the eval loss for overfitting"
    if rows > LARGE_DATA:
        if name == "full":
            return 3.0, f"{rows} rows: enough data to use the capacity of full fine-tuning"
        if key == "lora:strong":
            return 2.8, f"{rows} rows: LoRA r64 has the capacity to use this much data"
        if name in ("freeze", "loha", "adalora", "oft"):
            return 2.2, f"{rows} rows: a higher-capacity method can use this much data"
        if name in VECTOR_METHODS or name in PROMPT_METHODS or key == "lora:light":
            return 0.0, f"{rows} rows: so few trainable parameters will underfit"
        return 1.5, f"{rows} rows: a good fit"
    if key == "lora:balanced":
        return 3.0, f"{rows} rows: LoRA r16 on all linear layers is the usual choice at this size"
    if name in ("qlora", "adalora", "loha", "oft"):
        return 2.2, f"{rows} rows: a LoRA-like capacity suits this size"
    if name in HEAVY_METHODS:
        return 0.5, f"{rows} rows: full-weight training risks overfitting; LoRA is usually as good"
    return 1.5, f"{rows} rows: works; LoRA is usually at least as good"


def memory_score(verdict: str, name: str, lora_verdict: str) -> tuple[float, str | None]:
    if verdict == "does not fit":
        return -100.0, None
    if name == "qlora":
        if lora_verdict == "does not fit":
            return 4.0, "fits only in 4-bit -> QLoRA"
        return -0.5, "LoRA fits in 16-bit, which is faster and slightly better than QLoRA"
    return (0.0 if verdict == "fits" else -1.0), ("tight: close to the device's memory" if verdict == "tight" else None)


def advise(spec: RunSpec, config: dict[str, Any], capacity_bytes: int, rows: int | None = None,
           mean_tokens: float | None = None, vision: bool = False) -> list[Advice]:
    """Every candidate that fits, best first."""
    estimates = {}
    for name, preset in CANDIDATES:
        method = METHODS[name]
        if vision and not method.vision:
            continue
        try:
            e = est.estimate(estimate_request(spec.model_copy(update={"method": method.preset(preset)}), config))
            estimates[(name, preset)] = (e, est.verdict(e.total_bytes, capacity_bytes, e.band))
        except Exception:  # noqa: BLE001 - a method without an estimate is left out, not guessed
            continue
    lora_verdict = estimates.get(("lora", "balanced"), (None, "unknown"))[1]
    out = []
    for (name, preset), (e, verdict) in estimates.items():
        trainable, total = int(e.params["trainable"]), int(e.params.get("total") or 0) or None
        mem, mem_reason = memory_score(verdict, name, lora_verdict)
        if mem <= -100:
            continue
        data, reason = data_reason(name, preset, rows, trainable, total)
        reasons = [r for r in (mem_reason, reason) if r]
        score = mem + data
        if mean_tokens and mean_tokens >= LONG_ROWS and name == "longlora":
            score += 2.0
            reasons.append(f"rows of ~{mean_tokens:.0f} tokens: training embeddings and norms helps long contexts")
        out.append(Advice(name, preset, score, verdict, int(e.total_bytes), trainable, reasons))
    order = {key: i for i, key in enumerate(CANDIDATES)}  # ties: the table's order (usual choices first)
    return sorted(out, key=lambda a: (-a.score, order[(a.method, a.preset)]))
