"""BOFT (Liu et al., ICLR 2024, "Parameter-Efficient Orthogonal Finetuning via Butterfly Factorization"): OFT
whose rotation is a product of ``butterfly_factor`` sparse block-diagonal rotations, interleaved with
butterfly permutations (the Cooley-Tukey FFT pattern), so that small blocks still mix every input feature.
At ``butterfly_factor=1`` it is OFT. Each adapted layer also learns a scale per output feature. Merges.

Where it runs (peft 0.21.2, measured on this project's CPU machines):
- peft builds the butterfly product with a CUDA extension (``fbd_cuda``) compiled on first use; where it
  cannot be built (no CUDA, no ninja/nvcc) peft *silently* drops the butterfly factor to 1, i.e. trains
  plain OFT with a denser, slower implementation. On CPU the build attempt alone took 14.5 s and failed, and
  a step of SmolLM2-135M (attention layers, block 8, batch 2 x 64 tokens, 1 thread) took ~15 s: every adapted
  layer multiplies dense ``in x in`` rotation and permutation matrices each step. The worker's pre-flight
  therefore refuses BOFT where the extension does not load (always on CPU) and points to OFT.
- peft keeps per adapted layer a dense permutation buffer ``boft_P`` of ``butterfly_factor x in x in`` fp32
  numbers, and the forward keeps several ``in x in`` matrices for backward: memory grows with the square of
  the layers' input size (the estimator counts both), so the presets adapt the attention projections only.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from studio.methods.base import (Explain, Method, MethodSettings, ModelFacts, Problem, Targets, resolve_targets,
                                 targets_problems)

if TYPE_CHECKING:
    from studio.spec import RunSpec

NAME = "boft"


class BOFTSettings(MethodSettings):
    name: Literal["boft"] = "boft"
    block_size: int = Field(8, ge=2, le=1024, description="size of each orthogonal block; block_size x 2^(factor-1) "
                                                          "must divide the input size of every adapted layer")
    butterfly_factor: int = Field(2, ge=1, le=8, description="number of butterfly factors: 1 is OFT; each further "
                                                             "factor doubles the span of a rotation block")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="multiplicative dropout: blocks randomly set to identity")
    targets: Targets = Field(default_factory=lambda: Targets(mode="attention"))


PRESETS: dict[str, BOFTSettings] = {
    # peft's image-classification example uses block 4 with 2 factors; 8 gives LLM layers more room per block.
    "balanced": BOFTSettings(),
    "light": BOFTSettings(block_size=4, butterfly_factor=2),
    "wide": BOFTSettings(block_size=8, butterfly_factor=4),
}

EXPLAIN = Explain(
    summary="Orthogonal fine-tuning (like OFT: each adapted weight is rotated, keeping the neurons' relations) "
            "with the rotation built as a chain of small butterfly blocks, as in the FFT: blocks of size b in f "
            "factors mix features across b x 2^(f-1) inputs, at f x b trained numbers per input feature.",
    memory="Few trainable numbers, but peft keeps dense in x in permutation matrices per adapted layer and "
           "several in x in matrices per layer for backward: grows with the square of the layer width, so "
           "attention layers only by default.",
    speed="Slower than LoRA and OFT: the rotation is rebuilt and multiplied out every step. Needs peft's CUDA "
          "extension (built on first use): refused on CPU, where peft would silently train plain OFT.",
    when="On a GPU, when you want OFT's knowledge-preserving updates with rotations that reach further than "
         "one small block. On CPU choose OFT.",
)

# peft's BOFT docs give no rate for language models; like OFT it learns a rotation: the studio's LoRA-range start.
DEFAULT_LEARNING_RATE = 1e-4


def validate(spec: "RunSpec", total_steps: int | None = None) -> list[Problem]:
    return targets_problems(spec.method.targets, "method")


def span(s: BOFTSettings) -> int:
    """What every adapted layer's input size must be a multiple of (peft: block_size x 2^(factor - 1))."""
    return s.block_size * 2 ** (s.butterfly_factor - 1)


def input_widths(s: BOFTSettings, facts: ModelFacts) -> dict[str, int]:
    """The input sizes of the layers the settings adapt, from config.json: hidden (q/k/v, gate/up), the
    attention output's input (heads x head_dim, o_proj) and the MLP's (intermediate, down_proj)."""
    cfg = facts.text_config
    out: dict[str, int] = {}
    if cfg.get("hidden_size"):
        out["hidden_size"] = int(cfg["hidden_size"])
        heads = cfg.get("num_attention_heads")
        head_dim = cfg.get("head_dim") or (int(cfg["hidden_size"]) // int(heads) if heads else None)
        if heads and head_dim and int(heads) * int(head_dim) != out["hidden_size"]:
            out["attention output (heads x head_dim)"] = int(heads) * int(head_dim)
    if s.targets.mode != "attention" and cfg.get("intermediate_size"):
        out["intermediate_size"] = int(cfg["intermediate_size"])
    return out


def model_problems(spec: "RunSpec", facts: ModelFacts) -> list[Problem]:
    """peft refuses a layer whose input size is not a multiple of block_size x 2^(factor-1), and with more
    than one factor needs an even block size and an even number of blocks: checked on the model's sizes."""
    s: BOFTSettings = spec.method
    problems = []
    if s.butterfly_factor > 1 and s.block_size % 2:
        problems.append(Problem("method.block_size", f"block size {s.block_size} is odd; butterfly factors need an "
                                "even block size", "use an even block size such as 4 or 8, or butterfly_factor 1"))
    need = span(s)
    widths = input_widths(s, facts)
    bad = {n: v for n, v in widths.items() if v % need or (s.butterfly_factor > 1 and (v // s.block_size) % 2)}
    if bad:
        what = (f"block size {s.block_size}" if s.butterfly_factor == 1 else
                f"block size {s.block_size} x 2^{s.butterfly_factor - 1} (butterfly factor {s.butterfly_factor}) = {need}")
        fits = [b for b in (2, 4, 8, 16, 32) if all(v % (b * 2 ** (s.butterfly_factor - 1)) == 0 and
                                                    (s.butterfly_factor == 1 or (v // b) % 2 == 0)
                                                    for v in widths.values())]
        hint = (f"choose a block size that fits (e.g. {', '.join(map(str, fits))})" if fits
                else "lower the butterfly factor or the block size")
        problems.append(Problem("method.block_size", f"{what} does not divide the model's "
                                + ", ".join(f"{n} {v}" for n, v in bad.items()), hint))
    return problems


def extension_available() -> bool:
    """peft's butterfly kernel (``fbd_cuda``), built with torch's C++ extension loader on first use."""
    import torch

    if not torch.cuda.is_available():
        return False  # peft's loader builds a .cu file: never on CPU (and the failed attempt costs ~15 s)
    from peft.tuners.boft.layer import get_fbd_cuda

    return get_fbd_cuda() is not None


def device_problems(spec: "RunSpec") -> list[Problem]:
    if extension_available():
        return []
    return [Problem("method.name", "BOFT needs peft's butterfly CUDA extension (fbd_cuda), which cannot be built on "
                    "this worker (no CUDA GPU, or no ninja/CUDA toolkit); peft would silently train plain OFT with a "
                    "dense in x in rotation (measured on CPU: ~15 s per step on SmolLM2-135M)",
                    "choose OFT (BOFT with one factor, faster), or train on a GPU worker with ninja and the CUDA "
                    "toolkit")]


def build_peft_config(spec: "RunSpec", model_info: Any, total_steps: int) -> Any:
    from peft import BOFTConfig

    s: BOFTSettings = spec.method
    facts = ModelFacts.of(model_info)
    targets = resolve_targets(s.targets, facts, None)
    return BOFTConfig(task_type="CAUSAL_LM", boft_block_size=s.block_size, boft_block_num=0,
                      boft_n_butterfly_factor=s.butterfly_factor, boft_dropout=s.dropout, bias="none",
                      target_modules=targets["target_modules"], exclude_modules=targets["exclude_modules"])


def estimator_fields(spec: "RunSpec") -> dict[str, Any]:
    s: BOFTSettings = spec.method
    return {"method": NAME, "oft_block_size": s.block_size, "boft_butterfly_factor": s.butterfly_factor,
            "targets": s.targets.estimator_targets()}


METHOD = Method(
    name=NAME, label="BOFT", settings_cls=BOFTSettings, presets=PRESETS, default_preset="balanced", explain=EXPLAIN,
    default_learning_rate=DEFAULT_LEARNING_RATE, validate=validate, build_peft_config=build_peft_config,
    model_problems=model_problems, device_problems=device_problems, estimator_fields=estimator_fields,
    vision=False,
    vision_refusal="the studio has not checked BOFT on Qwen2.5-VL (it cannot train on the CPU machines where the "
                   "vision-language tests run)",
)
