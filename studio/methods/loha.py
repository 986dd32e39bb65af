"""LoHa (Hyeon-Woo et al., 2022, FedPara; LyCORIS): the update is the element-wise (Hadamard) product of two
low-rank matrices, so rank r gives an update of rank up to r^2 for 2x LoRA's parameters. Merges."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from studio.methods.base import (Explain, Method, MethodSettings, ModelFacts, Problem, Targets, resolve_targets,
                                 targets_problems)

if TYPE_CHECKING:
    from studio.spec import RunSpec

NAME = "loha"


class LoHaSettings(MethodSettings):
    name: Literal["loha"] = "loha"
    r: int = Field(8, ge=1, le=1024, description="rank of each of the two low-rank factors")
    alpha: int = Field(8, ge=1, le=4096, description="scaling numerator: the update is scaled by alpha/r")
    rank_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the rank dimension while training")
    module_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="chance of skipping a layer's update in a step")
    targets: Targets = Field(default_factory=Targets)


PRESETS: dict[str, LoHaSettings] = {
    "balanced": LoHaSettings(),  # peft's defaults
    "light": LoHaSettings(r=4, alpha=4, targets=Targets(mode="attention")),
    "strong": LoHaSettings(r=16, alpha=16),
}

EXPLAIN = Explain(
    summary="Like LoRA, but the update is the element-wise product of two low-rank pairs: a richer "
            "(higher-rank) change for twice the parameters of LoRA at the same r.",
    memory="Like LoRA at twice the rank, plus the element-wise products while training.",
    speed="Slower than LoRA: the full-size update matrix is rebuilt for every adapted layer in each step.",
    when="LoRA underfits at ranks you can afford and you want more expressive updates; popular for images.",
)

# LyCORIS' guidelines give LoHa/LoKr the LoRA learning-rate range (1e-4 .. 5e-4); peft has no own value.
DEFAULT_LEARNING_RATE = 2e-4


def validate(spec: "RunSpec", total_steps: int | None = None) -> list[Problem]:
    return targets_problems(spec.method.targets, "method")


def build_peft_config(spec: "RunSpec", model_info: Any, total_steps: int) -> Any:
    from peft import LoHaConfig

    s: LoHaSettings = spec.method
    facts = ModelFacts.of(model_info)
    targets = resolve_targets(s.targets, facts, spec.vision if facts.is_vision else None)
    return LoHaConfig(task_type="CAUSAL_LM", r=s.r, alpha=s.alpha, rank_dropout=s.rank_dropout,
                      module_dropout=s.module_dropout, target_modules=targets["target_modules"],
                      exclude_modules=targets["exclude_modules"], modules_to_save=targets["modules_to_save"])


def estimator_fields(spec: "RunSpec") -> dict[str, Any]:
    s: LoHaSettings = spec.method
    return {"method": NAME, "lora_rank": s.r, "targets": s.targets.estimator_targets()}


METHOD = Method(
    name=NAME, label="LoHa", settings_cls=LoHaSettings, presets=PRESETS, default_preset="balanced", explain=EXPLAIN,
    default_learning_rate=DEFAULT_LEARNING_RATE, validate=validate, build_peft_config=build_peft_config,
    estimator_fields=estimator_fields,
)
