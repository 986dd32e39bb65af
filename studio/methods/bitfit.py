"""BitFit (Ben Zaken et al., 2022): train only bias terms, with peft's BEFT tuner.

peft's BEFT gives every adapted linear layer a trainable bias vector added to its output, starting
at zero; the weights stay frozen. On layers that already have a bias (Qwen2's q/k/v) that is exactly
BitFit's update of the bias; on layers without one (Llama, SmolLM2: no biases at all) it adds one,
the nearest BitFit can come there. peft merges BEFT only into layers that already have a bias, so
the studio keeps BitFit adapters separate (adapter-only export) rather than merge some models and
refuse others.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from studio.methods.base import (Explain, Method, MethodSettings, ModelFacts, Problem, Targets, language_linear_regex,
                                 targets_problems)

if TYPE_CHECKING:
    from studio.spec import RunSpec

NAME = "bitfit"


class BitFitSettings(MethodSettings):
    name: Literal["bitfit"] = "bitfit"
    targets: Targets = Field(default_factory=Targets)


PRESETS: dict[str, BitFitSettings] = {
    "all-linear": BitFitSettings(),
    "attention": BitFitSettings(targets=Targets(mode="attention")),
}

EXPLAIN = Explain(
    summary="Trains only bias vectors (one per adapted linear layer); every weight matrix stays frozen. "
            "Where a layer has no bias (Llama-style models), one is added, starting at zero.",
    memory="The frozen model plus one vector per layer: the smallest trained part after prompt tuning.",
    speed="About as fast as a frozen forward and backward pass.",
    when="Tiny data or a quick check that fine-tuning helps at all; learns less than LoRA. Kept as an "
         "adapter (not merged) so it works on every model.",
)

# Ben Zaken et al. searched 1e-4 .. 1e-3 and report that BitFit needs the larger rates; 1e-3.
DEFAULT_LEARNING_RATE = 1e-3


def validate(spec: "RunSpec", total_steps: int | None = None) -> list[Problem]:
    return targets_problems(spec.method.targets, "method")


def build_peft_config(spec: "RunSpec", model_info: Any, total_steps: int) -> Any:
    from peft import BeftConfig

    return BeftConfig(task_type="CAUSAL_LM",
                      target_modules=language_linear_regex(spec.method.targets, ModelFacts.of(model_info)))


def estimator_fields(spec: "RunSpec") -> dict[str, Any]:
    return {"method": NAME, "targets": spec.method.targets.estimator_targets()}


METHOD = Method(
    name=NAME, label="BitFit (biases only)", settings_cls=BitFitSettings, presets=PRESETS,
    default_preset="all-linear", explain=EXPLAIN, default_learning_rate=DEFAULT_LEARNING_RATE, validate=validate,
    build_peft_config=build_peft_config, estimator_fields=estimator_fields, merges=False,
    merge_note="peft merges BitFit biases only into layers that already have one; the studio exports BitFit as "
               "an adapter.",
    family="selective",
)
