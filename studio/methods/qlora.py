"""QLoRA: LoRA on a base model quantized to 4 bits (NF4, Dettmers et al., 2023) or 8 bits.

The base weights are stored in 4/8 bits and de-quantized on the fly; the adapters train in 16/32
bits exactly as in LoRA. Published recipe: NF4 + double quantization, all linear layers, rank
16-64, learning rate 2e-4. The vision tower and the LM head stay unquantized on vision-language
models (small layers gain nothing and the bitsandbytes CPU kernels crash on in_features < 64).
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from studio.methods.base import Explain, Method, ModelFacts, Problem, package_available
from studio.methods import lora
from studio.methods.lora import DEFAULT_LEARNING_RATE, LoraSettings, lora_problems

if TYPE_CHECKING:
    from studio.spec import RunSpec

NAME = "qlora"
# Modules kept in full precision. transformers matches these from the start of a module name or
# as a suffix, so "model.visual" covers Qwen2.5-VL's whole vision tower and projector.
SKIP_MODULES_TEXT = ["lm_head"]
SKIP_MODULES_VISION = ["model.visual", "visual", "lm_head"]


class QLoraSettings(LoraSettings):
    name: Literal["qlora"] = "qlora"  # type: ignore[assignment]
    bits: Literal[4, 8] = Field(4, description="4: NF4/FP4 weights (smallest); 8: LLM.int8 weights")
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type; NF4 is the QLoRA paper's")
    double_quant: bool = Field(True, description="also quantize the quantization constants (~0.4 bit/param saved)")
    compute_dtype: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="dtype the de-quantized weights are multiplied in; auto follows the run's precision")


PRESETS: dict[str, QLoraSettings] = {
    "balanced": QLoraSettings(r=16, alpha=32),
    # The QLoRA paper's Guanaco setting: r=64, alpha=16 on all linear layers.
    "paper": QLoraSettings(r=64, alpha=16, dropout=0.05),
    "8-bit": QLoraSettings(r=16, alpha=32, bits=8),
    # LoftQ (Li et al., 2023): the adapter starts as the rank-r part of the 4-bit quantisation error (CUDA only)
    "loftq": QLoraSettings(r=16, alpha=16, init="loftq"),
}

EXPLAIN = Explain(
    summary="LoRA on a copy of the model compressed to 4 bits (or 8 bits). Same adapter file as "
            "LoRA; the compressed base is only used while training.",
    memory="About 0.55 bytes per parameter for the base in 4-bit (1.1 in 8-bit) instead of 2: a 7B "
           "model trains in ~6 GB plus activations.",
    speed="Slower than LoRA (weights are de-quantized at every layer): expect 20-50% more time on "
          "GPU, more on CPU.",
    when="The model does not fit in memory in 16-bit, or you want bigger batches on a small GPU. "
         "Quality is close to LoRA; prefer LoRA when memory allows.",
)


def validate(spec: "RunSpec", total_steps: int | None = None) -> list[Problem]:
    s: QLoraSettings = spec.method
    problems = lora_problems(s)
    if s.init in ("pissa", "olora"):  # PiSSA/OLoRA rewrite the base weights, which are quantized here
        problems.append(Problem("method.init", f"{s.init} initialisation needs full-precision base weights; QLoRA's "
                                "are quantized", "use the default initialisation, or LoRA with PiSSA"))
    if s.init == "loftq" and s.bits != 4:
        problems.append(Problem("method.init", "LoftQ's initialisation of a quantized model (peft "
                                "replace_lora_weights_loftq) supports 4-bit bases only", "set bits to 4"))
    if not package_available("bitsandbytes"):
        problems.append(Problem("method.name", "QLoRA needs the bitsandbytes package, which is not installed",
                                "pip install bitsandbytes, or choose LoRA"))
    if s.bits == 8 and (s.quant_type != "nf4" or not s.double_quant):
        problems.append(Problem("method.quant_type", "quant_type and double_quant apply to 4-bit only",
                                "leave them at their defaults for 8-bit"))
    if s.compute_dtype == "fp16" and spec.train.precision == "bf16":
        problems.append(Problem("method.compute_dtype", "fp16 compute with bf16 training mixes two half types",
                                "set compute_dtype to auto"))
    return problems


def kernel_problems(precision: str) -> list[Problem]:
    """Run bitsandbytes' 4-bit path once on this machine, as training will use it: quantise a
    weight, multiply through ``matmul_4bit`` forward and backward, and compare with the same product
    on the de-quantised weight in plain PyTorch. bitsandbytes picks different CPU kernels per CPU
    (AVX512 vs AVX2 vs scalar), so this is the one check that covers the kernels the run will get.
    A few milliseconds; refused with the reason instead of a run that cannot learn."""
    try:
        return list(_kernel_problems_cached(precision))
    except ImportError:
        return []  # validate() reports the missing package


@functools.cache
def _kernel_problems_cached(precision: str) -> tuple[Problem, ...]:
    import bitsandbytes as bnb
    import bitsandbytes.functional as F
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator().manual_seed(0)
    weight = (torch.randn(192, 128, generator=gen) * 0.05).to(device)
    x = torch.randn(6, 128, generator=gen).to(device, dtype).requires_grad_(True)
    packed, state = F.quantize_4bit(weight, quant_type="nf4")
    dequantised = F.dequantize_4bit(packed, state).float()
    # NF4's widest gap between levels (-1 to -0.696) is 0.30 of a block's absmax: rounding moves a weight by at most half
    block_max = weight.abs().reshape(-1, state.blocksize).amax(dim=1, keepdim=True)
    round_trip = ((dequantised - weight).reshape(-1, state.blocksize).abs() / block_max).max().item()
    y = bnb.matmul_4bit(x, packed.t(), state)
    y.float().square().sum().backward()
    x_ref = x.detach().float().requires_grad_(True)
    y_ref = x_ref @ dequantised.t()
    y_ref.square().sum().backward()
    tolerance = 0.05 if dtype != torch.float32 else 1e-3
    forward = ((y.float() - y_ref).abs().max() / y_ref.abs().max()).item()
    backward = ((x.grad.float() - x_ref.grad).abs().max() / x_ref.grad.abs().max()).item()
    where = f"{device} ({torch.backends.cpu.get_cpu_capability()})" if device == "cpu" else device
    problems = []
    if not round_trip <= 0.16:
        problems.append(Problem("method.name", f"bitsandbytes {bnb.__version__} de-quantises 4-bit weights wrongly "
                                f"on this {where} (error {round_trip:.2f} of the block maximum)",
                                "use LoRA, or another bitsandbytes version"))
    if not (forward <= tolerance and backward <= tolerance):
        problems.append(Problem("method.name", f"bitsandbytes {bnb.__version__} 4-bit matmul disagrees with PyTorch "
                                f"on this {where} (forward {forward:.1e}, backward {backward:.1e}); QLoRA would not "
                                "learn here", "use LoRA, or another bitsandbytes version"))
    return tuple(problems)


@functools.cache
def loftq_problems() -> tuple[Problem, ...]:
    """Run peft's LoftQ step (``_loftq_init_new``, what ``replace_lora_weights_loftq`` calls per layer) once on
    a small 4-bit weight here. peft 0.21.2 computes it on "cuda" (or "xpu"), hard-coded: on a CPU-only worker
    it fails ("Found no NVIDIA driver"), and the run is refused with that reason instead of failing mid-start."""
    import peft
    import torch

    try:
        import bitsandbytes as bnb
        from peft.utils.loftq_utils import _loftq_init_new

        device = "cuda" if torch.cuda.is_available() else "cpu"
        weight = torch.randn(128, 128, generator=torch.Generator().manual_seed(0)) * 0.05
        qweight = bnb.nn.Params4bit(weight.clone(), requires_grad=False, quant_type="nf4").to(device)
        lora_a, lora_b = _loftq_init_new(qweight, weight, num_bits=4, reduced_rank=4)
        if lora_a.shape != (4, 128) or lora_b.shape != (128, 4):
            raise RuntimeError(f"unexpected shapes {tuple(lora_a.shape)}, {tuple(lora_b.shape)}")
    except Exception as err:  # noqa: BLE001 - whatever stops it here stops the run: its message is the reason
        where = "this worker has no CUDA GPU" if not torch.cuda.is_available() else "it failed on this GPU"
        return (Problem("method.init", f"LoftQ cannot initialise here: peft {peft.__version__} computes it on CUDA "
                        f"only and {where} ({type(err).__name__}: {str(err)[:160]})",
                        "use the default initialisation on this worker, or run on a CUDA GPU worker"),)
    return ()


def device_problems(spec: "RunSpec") -> list[Problem]:
    from studio.training.device import resolve_precision

    problems = kernel_problems(resolve_precision(spec.train.precision))
    if spec.method.init == "loftq":
        problems += list(loftq_problems())
    return problems


def estimator_fields(spec: "RunSpec") -> dict[str, Any]:
    s: QLoraSettings = spec.method
    return {**lora.estimator_fields(spec), "method": NAME, "quant_bits": s.bits, "double_quant": s.double_quant}


def _compute_dtype(s: QLoraSettings, spec: "RunSpec"):
    import torch

    from studio.training.device import resolve_precision

    name = resolve_precision(spec.train.precision) if s.compute_dtype == "auto" else s.compute_dtype
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


def quantization_config(spec: "RunSpec", model_info: Any) -> Any:
    from transformers import BitsAndBytesConfig

    s: QLoraSettings = spec.method
    skip = SKIP_MODULES_VISION if ModelFacts.of(model_info).is_vision else SKIP_MODULES_TEXT
    if s.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(skip))
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=s.quant_type,
                              bnb_4bit_use_double_quant=s.double_quant, bnb_4bit_compute_dtype=_compute_dtype(s, spec),
                              llm_int8_skip_modules=list(skip))


def disable_cpu_weight_repacking(model: Any) -> int:
    """bitsandbytes on AVX512-BF16 CPUs repacks 4-bit weights in place at the first no-grad forward
    (e.g. the first evaluation); adapters attached or merged afterwards then compute garbage.
    Switching the fast path off on every 4-bit layer keeps the weights as they were loaded."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    n = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit) and getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            n += 1
    return n


def prepare_model(model: Any, spec: "RunSpec") -> Any:
    from peft import prepare_model_for_kbit_training

    disable_cpu_weight_repacking(model)
    # Casts norms to fp32 and makes the inputs require grads so checkpointed layers get gradients
    # (the QLoRA paper's setup; peft's documented first step for k-bit training).
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=spec.train.gradient_checkpointing,
                                           gradient_checkpointing_kwargs={"use_reentrant": False})


METHOD = Method(
    name=NAME,
    label="QLoRA",
    settings_cls=QLoraSettings,
    presets=PRESETS,
    default_preset="balanced",
    explain=EXPLAIN,
    default_learning_rate=DEFAULT_LEARNING_RATE,
    validate=validate,
    build_peft_config=lora.build_peft_config,  # the adapter is plain LoRA; only the base differs
    quantization_config=quantization_config,
    prepare_model=prepare_model,
    callbacks=lora.callbacks,  # LoftQ: its initialisation, and the initial adapter for the conversion at save
    save_adapter=lora.save_adapter,
    estimator_fields=estimator_fields,
    device_problems=device_problems,
    max_processes_without_gpu=1,  # bitsandbytes' CPU kernels are single-process
    merge_note="The adapter was trained on a 4-bit base; it was merged into a {dtype} reload of the base, "
               "not into the 4-bit weights (that merge is lossy).",
    requires=("bitsandbytes",),
)
