"""Prefix tuning (Li & Liang, 2021): learned key/value vectors put before every layer's attention.

Like prompt tuning but deeper: every layer attends to ``num_virtual_tokens`` learned keys and values
(P-tuning v2, Liu et al. 2022, is the same idea). ``projection`` trains them through a small MLP
(the paper's reparameterisation, more stable, many more parameters while training). Cannot be merged.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from studio.methods.base import Explain, Method, MethodSettings, Problem
from studio.methods.prompt_tuning import prompt_method_problems

if TYPE_CHECKING:
    from studio.spec import RunSpec

NAME = "prefix_tuning"


class PrefixTuningSettings(MethodSettings):
    name: Literal["prefix_tuning"] = "prefix_tuning"
    num_virtual_tokens: int = Field(20, ge=1, le=512, description="learned key/value positions per layer")
    projection: bool = Field(False, description="train the prefixes through an MLP (the paper's reparameterisation)")
    projection_hidden: int = Field(512, ge=8, le=8192, description="hidden size of that MLP")


PRESETS: dict[str, PrefixTuningSettings] = {
    "balanced": PrefixTuningSettings(),
    "reparameterised": PrefixTuningSettings(projection=True),
}

EXPLAIN = Explain(
    summary="Learns key and value vectors that every attention layer sees before the input (P-tuning v2 "
            "is the same idea); the weights do not change.",
    memory="The frozen model plus the prefixes (layers x 2 x tokens x key/value size) and their attention.",
    speed="A little slower than LoRA (longer attention); converges more slowly.",
    when="Generation tasks with a fixed format, when you want several tasks as tiny files on one base. "
         "Cannot be merged; text models only.",
)

# peft's prefix-tuning guide trains with AdamW at 1e-2 (the paper's 5e-5 is for its MLP-reparameterised setup).
DEFAULT_LEARNING_RATE = 1e-2


def validate(spec: "RunSpec", total_steps: int | None = None) -> list[Problem]:
    return prompt_method_problems(spec)


def build_peft_config(spec: "RunSpec", model_info: Any, total_steps: int) -> Any:
    from peft import PrefixTuningConfig

    s: PrefixTuningSettings = spec.method
    return PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=s.num_virtual_tokens,
                              prefix_projection=s.projection, encoder_hidden_size=s.projection_hidden)


def estimator_fields(spec: "RunSpec") -> dict[str, Any]:
    s: PrefixTuningSettings = spec.method
    return {"method": NAME, "virtual_tokens": s.num_virtual_tokens,
            "encoder_hidden": s.projection_hidden if s.projection else 0}


METHOD = Method(
    name=NAME, label="Prefix tuning", settings_cls=PrefixTuningSettings, presets=PRESETS, default_preset="balanced",
    explain=EXPLAIN, default_learning_rate=DEFAULT_LEARNING_RATE, validate=validate,
    build_peft_config=build_peft_config, estimator_fields=estimator_fields, merges=False,
    merge_note="Prefix tuning adds learned keys and values, not weight changes: there is nothing to merge.",
    vision=False, padding_free=False, family="additive",
)
