"""LoKr (Edalati et al., 2022, KronA; LyCORIS): the update is a Kronecker product of a small matrix and a
(low-rank) matrix: very few parameters for a full-rank update. Merges."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from studio.methods.base import (Explain, Method, MethodSettings, ModelFacts, Problem, Targets, resolve_targets,
                                 targets_problems)

if TYPE_CHECKING:
    from studio.spec import RunSpec

NAME = "lokr"


class LoKrSettings(MethodSettings):
    name: Literal["lokr"] = "lokr"
    r: int = Field(8, ge=1, le=1024, description="rank of the larger Kronecker factor (when it is decomposed)")
    alpha: int = Field(8, ge=1, le=4096, description="scaling numerator: the update is scaled by alpha/r")
    decompose_both: bool = Field(False, description="also write the smaller factor as a low-rank product")
    decompose_factor: int = Field(-1, ge=-1, le=4096, description="size of the smaller factor's dimensions "
                                                                  "(-1: as close to a square split as possible)")
    rank_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    module_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    targets: Targets = Field(default_factory=Targets)


PRESETS: dict[str, LoKrSettings] = {
    "balanced": LoKrSettings(),  # peft's defaults
    "strong": LoKrSettings(r=16, alpha=16),
}

EXPLAIN = Explain(
    summary="Writes each layer's update as a Kronecker product of two small matrices: a full-rank change "
            "from very few parameters (fewer than LoRA r8 on most layers).",
    memory="The frozen model plus very small factors; the full-size update is built per layer while training.",
    speed="Slower than LoRA: the Kronecker product is rebuilt for every adapted layer in each step.",
    when="You want LoRA-like results with smaller files, or LoRA's low rank limits what the model learns.",
)

# LyCORIS' guidelines give LoHa/LoKr the LoRA learning-rate range (1e-4 .. 5e-4); peft has no own value.
DEFAULT_LEARNING_RATE = 2e-4


def validate(spec: "RunSpec", total_steps: int | None = None) -> list[Problem]:
    return targets_problems(spec.method.targets, "method")


def build_peft_config(spec: "RunSpec", model_info: Any, total_steps: int) -> Any:
    from peft import LoKrConfig

    s: LoKrSettings = spec.method
    facts = ModelFacts.of(model_info)
    targets = resolve_targets(s.targets, facts, spec.vision if facts.is_vision else None)
    return LoKrConfig(task_type="CAUSAL_LM", r=s.r, alpha=s.alpha, decompose_both=s.decompose_both,
                      decompose_factor=s.decompose_factor, rank_dropout=s.rank_dropout,
                      module_dropout=s.module_dropout, target_modules=targets["target_modules"],
                      exclude_modules=targets["exclude_modules"], modules_to_save=targets["modules_to_save"])


def estimator_fields(spec: "RunSpec") -> dict[str, Any]:
    s: LoKrSettings = spec.method
    return {"method": NAME, "lora_rank": s.r, "targets": s.targets.estimator_targets(),
            "lokr_factor": s.decompose_factor, "lokr_decompose_both": s.decompose_both}


METHOD = Method(
    name=NAME, label="LoKr", settings_cls=LoKrSettings, presets=PRESETS, default_preset="balanced", explain=EXPLAIN,
    default_learning_rate=DEFAULT_LEARNING_RATE, validate=validate, build_peft_config=build_peft_config,
    estimator_fields=estimator_fields,
)
