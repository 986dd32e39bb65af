"""Prompt tuning (Lester et al., 2021): a few learned "virtual token" embeddings put before every input.

The model itself is untouched; only ``num_virtual_tokens`` x hidden numbers train. Nothing can be
merged into the weights: the adapter is needed at inference (peft prepends the tokens).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from studio.methods.base import Explain, Method, MethodSettings, Problem

if TYPE_CHECKING:
    from studio.spec import RunSpec

NAME = "prompt_tuning"


class PromptTuningSettings(MethodSettings):
    name: Literal["prompt_tuning"] = "prompt_tuning"
    num_virtual_tokens: int = Field(20, ge=1, le=512, description="learned tokens put before every input")
    init: Literal["random", "vocab"] = Field(
        "vocab", description="vocab: start from embeddings of random vocabulary tokens (the paper found it "
                             "better than random numbers); random: random numbers")


PRESETS: dict[str, PromptTuningSettings] = {
    "balanced": PromptTuningSettings(),
    "short": PromptTuningSettings(num_virtual_tokens=8),
    "long": PromptTuningSettings(num_virtual_tokens=100),
}

EXPLAIN = Explain(
    summary="Learns a few virtual tokens that are put before every input; the model's weights do not "
            "change at all.",
    memory="The frozen model plus activations for the extra tokens; the trained part is a few thousand numbers.",
    speed="Each step processes the virtual tokens too (a little slower than LoRA); learns slowly and needs "
          "more steps.",
    when="Steering style or format on small data with large models (the paper: it matches full fine-tuning "
         "only above ~10B parameters). Cannot be merged; text models only.",
)

# Lester et al. used 0.3 with Adafactor; peft's prompt-tuning guide uses 3e-2 with AdamW. The studio
# caps learning rates at 1e-2 (studio.spec.LR_MAX), so the default is that cap.
DEFAULT_LEARNING_RATE = 1e-2


def validate(spec: "RunSpec", total_steps: int | None = None) -> list[Problem]:
    return prompt_method_problems(spec)


def prompt_method_problems(spec: "RunSpec") -> list[Problem]:
    """Checks shared by prompt tuning, prefix tuning and P-tuning (virtual tokens before each row)."""
    tokens, cutoff, problems = spec.method.num_virtual_tokens, spec.train.cutoff_len, []
    if tokens >= cutoff // 2:
        problems.append(Problem("method.num_virtual_tokens", f"{tokens} virtual tokens take half or more of the "
                                f"cut-off ({cutoff} tokens)", "use fewer virtual tokens or a longer cutoff_len"))
    if spec.train.packing:
        problems.append(Problem("train.packing", "packed rows cannot each get their own virtual tokens",
                                "turn packing off for prompt-style methods"))
    return problems


def build_peft_config(spec: "RunSpec", model_info: Any, total_steps: int) -> Any:
    from peft import PromptTuningConfig

    s: PromptTuningSettings = spec.method
    return PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=s.num_virtual_tokens,
                              prompt_tuning_init="SAMPLE_VOCAB" if s.init == "vocab" else "RANDOM")


def estimator_fields(spec: "RunSpec") -> dict[str, Any]:
    return {"method": NAME, "virtual_tokens": spec.method.num_virtual_tokens}


MERGE_NOTE = "Prompt tuning adds virtual tokens, not weight changes: there is nothing to merge."

METHOD = Method(
    name=NAME, label="Prompt tuning", settings_cls=PromptTuningSettings, presets=PRESETS, default_preset="balanced",
    explain=EXPLAIN, default_learning_rate=DEFAULT_LEARNING_RATE, validate=validate,
    build_peft_config=build_peft_config, estimator_fields=estimator_fields, merges=False, merge_note=MERGE_NOTE,
    vision=False, padding_free=False, family="additive",
)
