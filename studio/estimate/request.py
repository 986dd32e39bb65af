"""Typed input and output of the estimator."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal, Union

Method = Literal["lora", "qlora", "adalora", "dora", "full", "ia3", "vera", "loha", "lokr", "oft", "boft", "bitfit",
                 "prompt_tuning", "prefix_tuning", "p_tuning", "blocks"]
Targets = Union[Literal["attention", "all-linear"], tuple]  # or a tuple of module names, e.g. ("q_proj", "v_proj")
DType = Literal["fp32", "bf16", "fp16"]
Optimizer = Literal["adamw", "adamw_fused", "adamw_8bit", "paged_adamw_8bit"]
Attention = Literal["sdpa", "eager", "flash"]
Strategy = Literal["ddp", "fsdp"]
Trainer = Literal["hf", "trl-sft"]

# "blocks": whole decoder blocks trained as a peft adapter (the studio's freeze tuning and full fine-tuning)
METHODS = ("lora", "qlora", "adalora", "dora", "full", "ia3", "vera", "loha", "lokr", "oft", "boft", "bitfit",
           "prompt_tuning", "prefix_tuning", "p_tuning", "blocks")
TARGETS = ("attention", "all-linear")
DTYPES = ("fp32", "bf16", "fp16")
OPTIMIZERS = ("adamw", "adamw_fused", "adamw_8bit", "paged_adamw_8bit")
ATTENTIONS = ("sdpa", "eager", "flash")
BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}

GIB = 1024 ** 3


@dataclass(frozen=True)
class EstimateRequest:
    """One training run, as far as memory is concerned.

    ``config`` is a model's config.json as a dict. ``dtype`` is the dtype the base weights are held
    in (and the compute dtype of QLoRA's de-quantized matmuls). ``seq_len`` is the cut-off: the
    longest tokenized sample, padded to in a batch; for vision-language models it includes the image
    tokens. ``batch_size`` is per device; ``grad_accum`` does not change activation memory but keeps
    full fine-tuning's gradients alive between micro-batches.
    """

    config: dict[str, Any]
    method: Method = "lora"
    lora_rank: int = 16
    targets: Targets = "all-linear"
    dtype: DType = "bf16"
    quant_bits: int = 4
    double_quant: bool = True
    optimizer: Optimizer = "adamw"
    batch_size: int = 1
    grad_accum: int = 1
    seq_len: int = 2048
    gradient_checkpointing: bool = False
    attention: Attention = "sdpa"
    max_pixels: int = 1003520  # 1280 * 28 * 28, a common Qwen2.5-VL training setting
    images_per_sample: int = 0
    tune_vision: bool = False
    num_gpus: int = 1
    strategy: Strategy = "ddp"
    # None: what the trainer does -- peft keeps adapters in fp32 (autocast_adapter_dtype=True); TRL 1.x's
    # SFTTrainer casts the trainable parameters of a quantized model to bf16 (``_is_quantized_model``).
    adapter_dtype: DType | None = None
    # Full FT: the model is loaded in fp32 and trained with bf16 autocast (HF Trainer ``bf16=True`` on an
    # fp32 model): fp32 weights, gradients and Adam states. False: loaded in ``dtype`` and trained in it.
    master_weights: bool = False
    # qlora: None = what the trainer does. The studio ("trl-sft") calls peft's prepare_model_for_kbit_training,
    # which casts every non-quantized parameter to fp32; the peers' HF recipes ("hf") keep embeddings and LM head
    # in 16 bit (see formulas.upcast_rest).
    kbit_fp32_upcast: bool | None = None
    adalora_init_rank: int | None = None  # AdaLoRA trains from init_r (default 1.5 x rank) down to rank
    # The loss path: "hf" = the model's own logits + cross-entropy (the published runs); "trl-sft" =
    # TRL 1.x SFTTrainer's fused, chunked LM head (``add_fused_lm_head``), what the studio trains with.
    trainer: Trainer = "hf"
    lora_dropout: float = 0.0  # peft adapters: dropout > 0 keeps a dropout mask per adapted linear
    data: Any = None  # studio.estimate.data.TokenLengths of the dataset, or None (the cut-off decides)
    padding_free: bool = False
    packing: bool = False
    # The other PEFT methods (studio.estimate.methods): IA3's feed-forward layers (input-side vectors),
    # prompt methods' virtual tokens and encoder, OFT's block size, LoKr's factorisation, the blocks
    # freeze tuning / full fine-tuning train, and LongLoRA-style extras (embeddings, norms).
    feedforward: tuple = ()
    virtual_tokens: int = 0
    encoder_hidden: int = 0
    prompt_encoder: str = "MLP"
    oft_block_size: int = 32
    boft_butterfly_factor: int = 1  # BOFT: its block size is oft_block_size
    lokr_factor: int = -1
    lokr_decompose_both: bool = False
    train_blocks: int = 0  # -1: all
    train_final_norm: bool = False
    train_embeddings: bool = False
    train_norms: bool = False
    # Set by the estimator when seq_len came from the data: the rows' lengths already hold the image tokens.
    seq_from_data: bool = False

    def with_(self, **changes: Any) -> "EstimateRequest":
        return replace(self, **changes)

    @property
    def is_peft(self) -> bool:
        return self.method != "full"

    @property
    def adapter_dtype_resolved(self) -> str:
        if self.adapter_dtype is not None:
            return self.adapter_dtype
        return "bf16" if (self.method == "qlora" and self.trainer == "trl-sft") else "fp32"

    @property
    def kbit_upcast_resolved(self) -> bool:
        if self.kbit_fp32_upcast is not None:
            return bool(self.kbit_fp32_upcast)
        return self.trainer == "trl-sft"

    @property
    def is_vision(self) -> bool:
        return bool(self.config.get("vision_config"))

    @property
    def effective_batch(self) -> int:
        return self.batch_size * self.grad_accum * self.num_gpus

    def problems(self) -> list[str]:
        """Everything wrong with the request, all at once (empty when valid)."""
        out = []
        if not isinstance(self.targets, tuple) and self.targets not in TARGETS:
            out.append(f"targets must be one of {', '.join(TARGETS)} or a tuple of module names (got {self.targets!r})")
        for name, value, allowed in (("method", self.method, METHODS),
                                     ("dtype", self.dtype, DTYPES),
                                     ("adapter_dtype", self.adapter_dtype_resolved, DTYPES),
                                     ("optimizer", self.optimizer, OPTIMIZERS), ("attention", self.attention, ATTENTIONS),
                                     ("strategy", self.strategy, ("ddp", "fsdp")),
                                     ("trainer", self.trainer, ("hf", "trl-sft"))):
            if value not in allowed:
                out.append(f"{name} must be one of {', '.join(allowed)} (got {value!r})")
        for name in ("lora_rank", "batch_size", "grad_accum", "seq_len", "num_gpus"):
            if int(getattr(self, name)) < 1:
                out.append(f"{name} must be at least 1")
        if self.method == "qlora" and self.quant_bits not in (4, 8):
            out.append("quant_bits must be 4 or 8 for qlora")
        if self.images_per_sample < 0 or self.max_pixels < 0:
            out.append("images_per_sample and max_pixels cannot be negative")
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"):
            if key not in self.config and key not in (self.config.get("text_config") or {}):
                out.append(f"config has no {key}")
        return out


@dataclass(frozen=True)
class Estimate:
    """Peak memory per device, in bytes, as named parts that add up to ``total_bytes``.

    ``context_bytes`` is the part outside PyTorch's allocator (CUDA context, kernels, cuBLAS
    workspace): torch's ``max_memory_reserved`` / ``max_memory_allocated`` do not see it,
    ``nvidia-smi`` does. ``allocator_bytes`` is everything else.

    ``band``: the expected error (``studio.estimate.calibration.ErrorBand``) measured on the published
    runs. ``worst_case_bytes``: the estimate at the cut-off (equal to ``total_bytes`` unless the
    estimate is for a dataset's longest batch); ``rows_cut``: the dataset's rows the cut-off cuts.
    """

    parts: dict[str, int]
    total_bytes: int
    notes: list[str] = field(default_factory=list)
    params: dict[str, int] = field(default_factory=dict)
    context_bytes: int = 0
    band: Any = None
    worst_case_bytes: int | None = None
    rows_cut: int | None = None
    rows_cut_exact: bool = True
    data_rows: int | None = None

    @property
    def upper_bytes(self) -> int:
        """The upper edge of the error band (the estimate itself when no band is known)."""
        return self.band.upper(self.total_bytes) if self.band else self.total_bytes

    @property
    def allocator_bytes(self) -> int:
        return self.total_bytes - self.context_bytes

    @property
    def total_gib(self) -> float:
        return self.total_bytes / GIB

    def gib(self, part: str) -> float:
        return self.parts.get(part, 0) / GIB

    def as_dict(self) -> dict[str, Any]:
        out = {"parts": dict(self.parts), "total_bytes": self.total_bytes, "total_gib": round(self.total_gib, 3),
               "notes": list(self.notes), "params": dict(self.params), "context_bytes": self.context_bytes,
               "worst_case_bytes": self.worst_case_bytes if self.worst_case_bytes is not None else self.total_bytes}
        if self.band:
            out["error_band"] = self.band.as_dict()
            out["upper_bytes"] = self.upper_bytes
        if self.rows_cut is not None:
            out["data"] = {"rows": self.data_rows, "rows_cut": self.rows_cut, "rows_cut_exact": self.rows_cut_exact}
        return out

    def table(self) -> str:
        """A small text table of the parts (GiB), largest first."""
        width = max([len(k) for k in self.parts] + [5])
        lines = [f"{name:<{width}}  {value / GIB:9.2f} GiB" for name, value in
                 sorted(self.parts.items(), key=lambda kv: -kv[1]) if value]
        band = f"  ({self.band.text()})" if self.band else ""
        lines.append(f"{'total':<{width}}  {self.total_gib:9.2f} GiB{band}")
        if self.worst_case_bytes is not None and self.worst_case_bytes != self.total_bytes:
            lines.append(f"{'at the cut-off':<{width}}  {self.worst_case_bytes / GIB:9.2f} GiB  (worst case)")
        return "\n".join(lines)
