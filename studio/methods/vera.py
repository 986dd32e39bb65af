"""VeRA (Kopiczko et al., 2024): one pair of frozen random matrices shared by all layers, trained scaling vectors.

Every adapted layer computes ``diag(b) B diag(d) A x`` with A (r x in) and B (out x r) random, frozen
and shared across layers; only ``d`` (r numbers) and ``b`` (out numbers) train per layer: ~10x fewer
parameters than LoRA r16 at a higher rank. Merges into the weights like LoRA.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from studio.methods.base import (Explain, Method, MethodSettings, ModelFacts, Problem, Targets, language_linear_regex,
                                 targets_problems)

if TYPE_CHECKING:
    from studio.spec import RunSpec

NAME = "vera"


class VeraSettings(MethodSettings):
    name: Literal["vera"] = "vera"
    r: int = Field(256, ge=1, le=4096, description="rank of the shared random matrices (costs memory, not trained "
                                                   "parameters: only r numbers per layer train)")
    d_initial: float = Field(0.1, gt=0.0, le=1.0, description="starting value of the d scaling vector")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    targets: Targets = Field(default_factory=Targets)


PRESETS: dict[str, VeraSettings] = {
    # peft's default rank; the paper's instruction-tuning runs used 1024 on Llama 7B/13B.
    "balanced": VeraSettings(),
    "attention": VeraSettings(targets=Targets(mode="attention")),
    "wide": VeraSettings(r=1024),
}

EXPLAIN = Explain(
    summary="Like LoRA, but the two matrices are random, frozen and shared by all layers; each layer only "
            "learns two scaling vectors. About ten times fewer trained parameters than LoRA.",
    memory="The frozen model plus the shared random matrices (r x the widest layer, once) and tiny vectors.",
    speed="Similar to LoRA per step; often needs a higher learning rate and more steps to reach LoRA's quality.",
    when="Many adapters on one base or very small files matter more than the last bit of quality.",
)

# VeRA paper, Table 9 (instruction tuning Llama 7B): learning rate 4e-3 (LoRA's 4e-4 x 10).
DEFAULT_LEARNING_RATE = 4e-3


def validate(spec: "RunSpec", total_steps: int | None = None) -> list[Problem]:
    return targets_problems(spec.method.targets, "method")


def build_peft_config(spec: "RunSpec", model_info: Any, total_steps: int) -> Any:
    from peft import VeraConfig

    s: VeraSettings = spec.method
    return VeraConfig(task_type="CAUSAL_LM", r=s.r, d_initial=s.d_initial, vera_dropout=s.dropout,
                      target_modules=language_linear_regex(s.targets, ModelFacts.of(model_info)))


def estimator_fields(spec: "RunSpec") -> dict[str, Any]:
    s: VeraSettings = spec.method
    return {"method": NAME, "lora_rank": s.r, "targets": s.targets.estimator_targets()}


METHOD = Method(
    name=NAME, label="VeRA", settings_cls=VeraSettings, presets=PRESETS, default_preset="balanced", explain=EXPLAIN,
    default_learning_rate=DEFAULT_LEARNING_RATE, validate=validate, build_peft_config=build_peft_config,
    estimator_fields=estimator_fields,
)
