"""LongLoRA-style: LoRA plus trainable token embeddings and norms, for extending the context length.

Chen et al. (2024, "LongLoRA") found that LoRA alone does not adapt a model to longer contexts, and
that also training the embedding and normalisation layers ("LoRA+") closes most of the gap to full
fine-tuning. This method is that part of LongLoRA only: it does NOT implement the paper's shifted
sparse attention (S2-Attn), so attention costs as much as in any run at the same cut-off. Use it
with a long ``cutoff_len`` (and a model whose RoPE scaling allows it).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from studio.methods import lora
from studio.methods.base import Explain, Method, ModelFacts, Problem, Targets

if TYPE_CHECKING:
    from studio.spec import RunSpec

NAME = "longlora"
NORMS = ["input_layernorm", "post_attention_layernorm", "norm"]  # peft matches modules_to_save by suffix
EMBEDDINGS = ["embed_tokens"]
LONG_CUTOFF = 2048  # below this the method is just an expensive LoRA


class LongLoraSettings(lora.LoraSettings):
    name: Literal["longlora"] = "longlora"  # type: ignore[assignment]
    train_embeddings: bool = Field(True, description="train the token embedding (tied output head follows it)")
    train_norms: bool = Field(True, description="train every normalisation layer")


PRESETS: dict[str, LongLoraSettings] = {
    # The paper: rank 8 on attention, embeddings and norms trainable.
    "paper": LongLoraSettings(r=8, alpha=16, targets=Targets(mode="attention")),
    "all-linear": LongLoraSettings(r=16, alpha=32),
}

EXPLAIN = Explain(
    summary="LoRA plus trainable token embeddings and normalisation layers (LongLoRA's \"LoRA+\"), for "
            "teaching a model longer contexts. Without LongLoRA's shifted sparse attention.",
    memory="LoRA's memory plus the embedding matrix with its gradients and optimizer state (vocabulary x "
           "hidden x ~16 bytes), and long-context activations.",
    speed="Like LoRA at the same cut-off; long cut-offs are what make it slow.",
    when="Extending the usable context (long documents, cut-off of several thousand tokens). For short "
         "rows plain LoRA is cheaper.",
)

# LongLoRA (Chen et al., 2024, Sec. 4.1): learning rate 2e-5 for Llama-2 7B/13B with trainable embeddings.
DEFAULT_LEARNING_RATE = 2e-5


def validate(spec: "RunSpec", total_steps: int | None = None) -> list[Problem]:
    s: LongLoraSettings = spec.method
    problems = lora.lora_problems(s)
    if not (s.train_embeddings or s.train_norms):
        problems.append(Problem("method.train_embeddings", "with neither embeddings nor norms trained this is "
                                "plain LoRA", "choose LoRA instead"))
    return problems


def modules_to_save(s: LongLoraSettings) -> list[str]:
    return (EMBEDDINGS if s.train_embeddings else []) + (NORMS if s.train_norms else [])


def build_peft_config(spec: "RunSpec", model_info: Any, total_steps: int) -> Any:
    from peft import LoraConfig

    s: LongLoraSettings = spec.method
    kwargs = lora.lora_config_kwargs(s, spec, model_info)
    kwargs["modules_to_save"] = [*(kwargs["modules_to_save"] or []), *modules_to_save(s)]
    # A tied output head must stay tied to the trained embedding copy (peft otherwise unties them).
    return LoraConfig(**kwargs, ensure_weight_tying=ModelFacts.of(model_info).tied_embeddings)


def estimator_fields(spec: "RunSpec") -> dict[str, Any]:
    s: LongLoraSettings = spec.method
    return {**lora.estimator_fields(spec), "train_embeddings": s.train_embeddings, "train_norms": s.train_norms}


METHOD = Method(
    name=NAME, label="LongLoRA-style (LoRA + embeddings + norms)", settings_cls=LongLoraSettings, presets=PRESETS,
    default_preset="paper", explain=EXPLAIN, default_learning_rate=DEFAULT_LEARNING_RATE, validate=validate,
    build_peft_config=build_peft_config, callbacks=lora.callbacks, save_adapter=lora.save_adapter,
    estimator_fields=estimator_fields,
    merge_note="The trained embeddings and norms replace the base model's in the merged weights.",
)
