"""P-tuning (Liu et al., 2021, "GPT Understands, Too"): virtual tokens produced by a small prompt encoder.

Like prompt tuning, but the virtual token embeddings come out of a trained MLP (or LSTM), which the
paper found to train more stably. Only the encoder's output is needed at inference; nothing merges.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from studio.methods.base import Explain, Method, MethodSettings, Problem
from studio.methods.prompt_tuning import prompt_method_problems

if TYPE_CHECKING:
    from studio.spec import RunSpec

NAME = "p_tuning"


class PTuningSettings(MethodSettings):
    name: Literal["p_tuning"] = "p_tuning"
    num_virtual_tokens: int = Field(20, ge=1, le=512, description="virtual tokens put before every input")
    encoder_hidden: int = Field(128, ge=8, le=8192, description="hidden size of the prompt encoder")
    encoder: Literal["MLP", "LSTM"] = Field("MLP", description="the prompt encoder's kind")


PRESETS: dict[str, PTuningSettings] = {
    "balanced": PTuningSettings(),
    "lstm": PTuningSettings(encoder="LSTM"),
}

EXPLAIN = Explain(
    summary="Learns virtual tokens put before every input, produced by a small encoder network "
            "(MLP or LSTM) that makes them train more stably than plain prompt tuning.",
    memory="The frozen model plus the encoder (well under 1% of the model) and the extra tokens' activations.",
    speed="Like prompt tuning: a little slower than LoRA per step, needs more steps.",
    when="Classification-like or format tasks on small data; tiny files. Cannot be merged; text models only.",
)

# peft's P-tuning guide trains with AdamW at 1e-3.
DEFAULT_LEARNING_RATE = 1e-3


def validate(spec: "RunSpec", total_steps: int | None = None) -> list[Problem]:
    return prompt_method_problems(spec)


def build_peft_config(spec: "RunSpec", model_info: Any, total_steps: int) -> Any:
    from peft import PromptEncoderConfig

    s: PTuningSettings = spec.method
    return PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=s.num_virtual_tokens,
                               encoder_hidden_size=s.encoder_hidden, encoder_reparameterization_type=s.encoder)


def estimator_fields(spec: "RunSpec") -> dict[str, Any]:
    s: PTuningSettings = spec.method
    return {"method": NAME, "virtual_tokens": s.num_virtual_tokens, "encoder_hidden": s.encoder_hidden,
            "prompt_encoder": s.encoder}


METHOD = Method(
    name=NAME, label="P-tuning", settings_cls=PTuningSettings, presets=PRESETS, default_preset="balanced",
    explain=EXPLAIN, default_learning_rate=DEFAULT_LEARNING_RATE, validate=validate,
    build_peft_config=build_peft_config, estimator_fields=estimator_fields, merges=False,
    merge_note="P-tuning adds virtual tokens, not weight changes: there is nothing to merge.",
    vision=False, padding_free=False, family="additive",
)
