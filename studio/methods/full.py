"""Full fine-tuning: every weight of the language model trains (the baseline all PEFT methods are measured
against).

Built on peft's LN-tuning tuner, like freeze tuning, targeted at every decoder block, the final
norm and the token embedding: the result is an adapter holding the trained copy (as large as the
model), which the chat can switch off for a side-by-side comparison and which merges into a plain
model. One honest exception: when the embedding is tied to the output head (SmolLM2, Qwen2.5-0.5B),
it stays frozen, because training one copy would untie them and the merged model could not be saved
as the same architecture. The vision tower of a vision-language model stays frozen.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from studio.methods.base import Explain, Method, MethodSettings, ModelFacts, Problem, blocks_regex

if TYPE_CHECKING:
    from studio.spec import RunSpec

NAME = "full"


class FullSettings(MethodSettings):
    name: Literal["full"] = "full"


PRESETS: dict[str, FullSettings] = {"full": FullSettings()}

EXPLAIN = Explain(
    summary="Trains every weight of the language model (the token embedding too unless it is tied to the "
            "output head). The most capable and the most expensive; the baseline of every PEFT paper.",
    memory="The model twice (frozen original and trained copy) plus gradients and AdamW state for every "
           "weight: ~18 bytes per parameter, 6-8x LoRA.",
    speed="Slowest: gradients and optimizer updates for all weights; the adapter is as large as the model.",
    when="Large datasets (tens of thousands of rows or more), a new language or domain, and a GPU with the "
         "memory for it. Small datasets overfit: prefer LoRA.",
)

# Stanford Alpaca's full fine-tuning of Llama 7B: 2e-5 (full fine-tuning wants ~10x below LoRA's rate).
DEFAULT_LEARNING_RATE = 2e-5


def validate(spec: "RunSpec", total_steps: int | None = None) -> list[Problem]:
    return []


def extra_modules(facts: ModelFacts) -> tuple[str, ...]:
    untied = () if facts.tied_embeddings else ("embed_tokens", "lm_head")
    return ("norm", *untied)


def build_peft_config(spec: "RunSpec", model_info: Any, total_steps: int) -> Any:
    from peft import LNTuningConfig

    facts = ModelFacts.of(model_info)
    if not facts.num_layers:
        raise ValueError("full fine-tuning needs the model's num_hidden_layers (config.json)")
    return LNTuningConfig(task_type="CAUSAL_LM", target_modules=blocks_regex(0, facts.num_layers - 1,
                                                                             extra_modules(facts)))


def estimator_fields(spec: "RunSpec") -> dict[str, Any]:
    return {"method": "blocks", "train_blocks": -1, "train_final_norm": True, "train_embeddings": True}


METHOD = Method(
    name=NAME, label="Full fine-tuning", settings_cls=FullSettings, presets=PRESETS, default_preset="full",
    explain=EXPLAIN, default_learning_rate=DEFAULT_LEARNING_RATE, validate=validate,
    build_peft_config=build_peft_config, estimator_fields=estimator_fields, family="full",
    merge_note="The merged model holds the fully trained weights ({dtype}).",
)
