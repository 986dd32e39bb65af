"""The formulas, one function per memory part, each with where it comes from.

Sources cited below:
  [ANATOMY]  Hugging Face, "Model training anatomy" (memory of weights, optimizer states, gradients,
             forward activations, temporary buffers): https://huggingface.co/docs/transformers/model_memory_anatomy
  [TM101]    EleutherAI, "Transformer Math 101": https://blog.eleuther.ai/transformer-math/
  [ZERO]     Rajbhandari et al., "ZeRO: Memory Optimizations Toward Training Trillion Parameter Models"
             (2020), section 3.1: mixed-precision Adam keeps 2+2+12 bytes per parameter.
  [KORTH]    Korthikanti et al., "Reducing Activation Recomputation in Large Transformer Models"
             (2022), section 4: activation memory per layer = s*b*h*(34 + 5*a*s/h) bytes for a GPT
             layer in 16-bit; we apply the same method -- count every tensor autograd saves -- to the
             Llama-style block HF transformers runs (RMSNorm in fp32, SwiGLU, no dropout, fused SDPA).
  [QLORA]    Dettmers et al., "QLoRA: Efficient Finetuning of Quantized LLMs" (2023), section 3:
             NF4 with block size 64, double quantization (8-bit constants, block size 256).
  [BNB8]     Dettmers et al., "8-bit Optimizers via Block-wise Quantization" (2022): 2 bytes of
             state per parameter for Adam, block-wise absmax constants (block size 2048).
  [LORA]     Hu et al., "LoRA" (2021): A (r x in) + B (out x r) per adapted matrix.
  [DORA]     Liu et al., "DoRA: Weight-Decomposed Low-Rank Adaptation" (2024): + a magnitude vector
             of size out per adapted matrix.
  [ADALORA]  Zhang et al., "AdaLoRA" (2023); peft's AdaLoraModel: P (r x in), Q (out x r), E (r),
             and RankAllocator keeps ipt / exp_avg_ipt / exp_avg_unc for every adapter parameter.
  [BOFT]     Liu et al., "Parameter-Efficient Orthogonal Finetuning via Butterfly Factorization" (ICLR 2024);
             peft 0.21 ``tuners/boft/layer.py``: boft_R (factor x in/block x block x block), boft_s (out),
             a dense permutation buffer (factor x in x in, fp32) and dense in x in products every forward.
  [FLASH]    Dao et al., "FlashAttention" (2022): attention memory linear in sequence length; the
             backward keeps q, k, v, the output and the row-wise logsumexp only.
  [QWENVL]   Qwen2.5-VL technical report and qwen-vl-utils: 14x14 patches, 2x2 merge -> one LLM
             token per 28x28 pixels; window attention (112 px) with 4 full-attention blocks.
  [BNB4]     bitsandbytes ``autograd/_functions.py`` ``MatMul4Bit``: forward ``F.linear(A,
             dequantize_4bit(B).to(A.dtype).t())``, backward dequantizes again for grad_A; the 16-bit
             copy is a temporary of one layer, freed after its matmul.
  [TORCHADAM] torch ``optim/adam.py`` ``_multi_tensor_adam`` (torch.optim.AdamW's default on CUDA,
             foreach=True): ``exp_avg_sq_sqrt = torch._foreach_sqrt(device_exp_avg_sqs)`` allocates one
             state-sized temporary for the whole parameter group during ``step()``; the fused kernel
             (``fused=True``, HF Trainer's ``adamw_torch_fused``) and bnb's 8-bit kernels work in place.
  [PEFTIA3]  peft ``tuners/ia3/layer.py`` ``Linear.forward``: a feed-forward IA3 layer casts its input to the
             vector's dtype and multiplies it (``x.to(dtype) * ia3_scaling``: the fp32 copy is saved for the
             vector's gradient); any other IA3 layer scales the frozen layer's *output* (``result *
             ia3_scaling``: the 16-bit output is saved). No low-rank product, no input copy.
  [FROZENLIN] torch ``tools/autograd/derivatives.yaml`` (``mm``/``addmm``; ``linear`` decomposes to them):
             the input (``self``) is needed only for the weight's gradient, and the generated autograd code
             saves a variable only when a gradient that uses it is required -- a frozen Linear keeps nothing,
             and gradients still flow through frozen MLPs via the SiLU/product tensors they save.
             Measured (tests/estimate/test_saved_activations.py, SmolLM2 shapes, bf16, CPU): what autograd
             keeps per layer for attention-only LoRA (q/v, q/k/v/o), all-linear LoRA and IA3 equals this
             count to within the attention-mask copy.
  [SDPAOUT]  torch ``aten/src/ATen/native/transformers/cuda/attention.cu``
             (``_scaled_dot_product_flash_attention_cuda``, ``..._efficient_attention_cuda``; the CPU flash
             kernel alike): the fused kernel writes its output as (batch, seq, heads, dim) and returns the
             transposed view, which it also saves for backward; HF's ``attn_output.transpose(1, 2)
             .contiguous()`` is then a no-op, so the input o_proj keeps (when its weight trains, or a
             same-dtype adapter reads it) is that very tensor, not a second copy. Measured in
             tests/estimate/test_saved_activations.py: full fine-tuning (bf16, fp32) and fp32 LoRA on
             o_proj keep exactly one (tokens x q_dim) tensor less than counting both.
  [PEFTDORA] peft ``tuners/lora/dora.py`` ``DoraLinearLayer.forward``: builds ``lora_weight`` through an
             identity matrix (in x in), casts the base weight to the input dtype and forms W + s*BA to
             take its row norms -- out x in temporaries per adapted layer, one layer at a time.
  [SDPAGQA]  transformers ``integrations/sdpa_attention.py`` ``use_gqa_in_sdpa``: on CUDA grouped
             keys/values reach SDPA un-repeated only when there is no attention mask; a padded batch
             has one, so ``repeat_kv`` materializes them per query head.
  [TRLQ]     TRL 1.x ``SFTTrainer.__init__``: for a quantized model, trainable parameters are cast to
             bf16 (``_is_quantized_model``). TRL 0.x ``peft_module_casting_to_bf16`` cast embeddings
             and LM head back to bf16 after ``prepare_model_for_kbit_training``; axolotl
             (``convert_embedding_modules_dtype``) and LLaMA-Factory (no kbit preparation) keep them
             in 16 bit too. Measurement: Unsloth's README context table (HF + FA2, Llama-3.1-8B QLoRA)
             grows by ~2.47 MB per token, which a 16-bit LM head (V*14 B/token of loss buffers, 1.8 MB)
             plus 16-bit checkpoints explains and an fp32 head (V*16 = 2.05 MB + fp32 checkpoints) does not.
"""
from __future__ import annotations

from dataclasses import dataclass

from studio.estimate import methods
from studio.estimate.arch import Linear, ModelArch, VisionArch
from studio.estimate.request import BYTES, GIB, EstimateRequest

# CUDA context + lazily loaded kernels + cuBLAS/cuDNN workspaces, outside torch's allocator.
# [ANATOMY] quotes 1-2 GB when all kernels load eagerly; with CUDA lazy module loading (default
# since CUDA 11.7 / PyTorch 1.13) a training process typically shows ~0.4-0.6 GiB more in nvidia-smi
# than torch.cuda.memory_reserved(). 0.5 GiB is used.
CUDA_CONTEXT_BYTES = GIB // 2
# The caching allocator rounds blocks and cannot always reuse freed ones for new shapes; peak
# *reserved* exceeds peak *allocated* by a few percent for transformer training. Applied to the
# transient (activation-like) parts only.
FRAGMENTATION = 0.05


# -- compute dtypes ----------------------------------------------------------------------------

def compute_bytes(req: EstimateRequest) -> int:
    """Bytes per element of activations: the weights' dtype (QLoRA: its compute dtype)."""
    return BYTES[req.dtype]


def adapter_bytes(req: EstimateRequest) -> int:
    """peft: fp32 adapters (``autocast_adapter_dtype=True``); TRL 1.x on a quantized model: bf16 [TRLQ]."""
    return BYTES[req.adapter_dtype_resolved]


def upcast_rest(req: EstimateRequest) -> bool:
    """QLoRA after peft's ``prepare_model_for_kbit_training`` alone (what the studio's recipe does):
    every non-quantized parameter (embeddings, norms, LM head, biases, the unquantized vision tower)
    is cast to fp32. The peers' HF recipes put embeddings and LM head back to 16 bit [TRLQ]; their
    fp32 norms are a few MB and not counted."""
    return req.method == "qlora" and req.kbit_upcast_resolved


def weight_bytes_each(req: EstimateRequest) -> int:
    """Bytes per unquantized weight: ``master_weights`` means an fp32-loaded model under autocast."""
    return 4 if (req.method == "full" and req.master_weights) else BYTES[req.dtype]


# -- base weights ------------------------------------------------------------------------------

def quant_bytes_per_param(bits: int, double_quant: bool) -> float:
    """Storage of one quantized weight incl. its share of the quantization constants.

    4-bit NF4 [QLORA]: 0.5 byte + one fp32 absmax per block of 64 = 4/64 = 0.0625 byte (0.5 bit).
    Double quantization stores the absmax as 8 bit (1/64 byte) plus one fp32 constant per 256 blocks
    (4/(64*256) byte): 0.127 bit per parameter, as the paper states.
    8-bit (LLM.int8): 1 byte; the per-row fp32 scale is added per matrix in ``quantized_weight_bytes``.
    """
    if bits == 8:
        return 1.0
    constants = (1 / 64 + 4 / (64 * 256)) if double_quant else 4 / 64
    return 0.5 + constants


def quantized_weight_bytes(arch: ModelArch, req: EstimateRequest) -> float:
    """The decoder blocks' linear weights in 4 or 8 bit (bitsandbytes skips the LM head)."""
    per_param = quant_bytes_per_param(req.quant_bits, req.double_quant)
    total = arch.quantizable_params * per_param
    if req.quant_bits == 8:  # one fp32 scale per output row
        total += arch.layers * sum(4 * l.fan_out for l in arch.layer_linears())
    return total


def text_weight_bytes(arch: ModelArch, req: EstimateRequest) -> float:
    """Decoder weights: params x dtype bytes [ANATOMY]; QLoRA: quantized blocks + the rest in the
    compute dtype, or fp32 after prepare_model_for_kbit_training."""
    if req.method != "qlora":
        return arch.text_params * weight_bytes_each(req)
    rest = arch.text_params - arch.quantizable_params
    return quantized_weight_bytes(arch, req) + rest * (4 if upcast_rest(req) else BYTES[req.dtype])


def vision_weight_bytes(arch: ModelArch, req: EstimateRequest) -> float:
    """The vision tower stays unquantized (the studio skips ``model.visual``)."""
    return arch.vision_params * (4 if upcast_rest(req) else weight_bytes_each(req))


def dequant_workspace_bytes(arch: ModelArch, req: EstimateRequest) -> float:
    """bitsandbytes de-quantizes one weight at a time to the compute dtype for the matmul, in
    forward and again in backward [BNB4]: only the layer being computed has a 16-bit copy, never all
    of them; the allocator may still hold the previous one, so two of the largest linear layer."""
    if req.method != "qlora":
        return 0.0
    return 2 * arch.largest_linear * compute_bytes(req)


# -- adapters, gradients, optimizer ------------------------------------------------------------

def _targeted(linears: list[Linear], targets) -> list[Linear]:
    """"all-linear", "attention" (q/k/v/o or fused qkv/o), or a tuple of module names (suffix match)."""
    if isinstance(targets, (tuple, list)):
        return [l for l in linears if l.name in targets or l.name.rsplit(".", 1)[-1] in targets]
    return [l for l in linears if targets == "all-linear" or l.group == "attention"]


def adapted_linears(arch: ModelArch, req: EstimateRequest) -> list[tuple[Linear, int]]:
    """(layer, how many copies) that get an adapter: the decoder blocks' targeted linears, plus the
    vision blocks' when ``tune_vision`` (the merger/projector stays excluded, as in the studio)."""
    if not req.is_peft:
        return []
    out = [(l, arch.layers) for l in _targeted(arch.layer_linears(), req.targets)]
    if arch.vision and req.tune_vision:
        out += [(l, arch.vision.depth) for l in _targeted(arch.vision.block_linears(), req.targets)]
    return out


def adapter_rank(req: EstimateRequest) -> int:
    """AdaLoRA allocates ``init_r`` first and prunes towards ``target_r`` (peft default init_r=12,
    target_r=8, i.e. 1.5x); memory is held at the initial rank."""
    if req.method == "adalora":
        return req.adalora_init_rank or max(1, round(req.lora_rank * 1.5))
    return req.lora_rank


def adapter_params_per_linear(l: Linear, req: EstimateRequest) -> int:
    """[LORA] r*(in+out); [DORA] + out (magnitude); [ADALORA] + r (the singular values E) + 1 (ranknum)."""
    r = adapter_rank(req)
    n = r * (l.fan_in + l.fan_out)
    if req.method == "dora":
        n += l.fan_out
    if req.method == "adalora":
        n += r + 1  # + ``ranknum``: a 1-element parameter peft marks trainable with the adapter
    return n


def adapter_params(arch: ModelArch, req: EstimateRequest) -> int:
    """Trainable parameters of a peft adapter (the other methods' counts: ``studio.estimate.methods``)."""
    if req.method in methods.PROMPT:
        return methods.prompt_params(arch, req)
    if req.method == "blocks":
        return methods.blocks_params(arch, req)
    per_linear = methods.per_linear_params if req.method in methods.PER_LINEAR else adapter_params_per_linear
    return sum(per_linear(l, req) * n for l, n in adapted_linears(arch, req)) + methods.extra_trainable(arch, req)


def trainable_params(arch: ModelArch, req: EstimateRequest) -> int:
    if req.is_peft:
        return adapter_params(arch, req)
    return arch.text_params + (arch.vision_params if req.tune_vision else 0)


def trainable_bytes_each(req: EstimateRequest) -> int:
    """dtype of trainable parameters and therefore of their gradients: peft adapters in
    ``adapter_dtype`` (fp32 by default), full fine-tuning in the weights' dtype (fp32 when the
    model is loaded in fp32 for mixed precision: its gradients are fp32 too)."""
    return adapter_bytes(req) if req.is_peft else weight_bytes_each(req)


def gradient_bytes(arch: ModelArch, req: EstimateRequest) -> float:
    """One gradient per trainable parameter, same dtype as the parameter [ANATOMY]."""
    return trainable_params(arch, req) * trainable_bytes_each(req)


def optimizer_state_bytes(arch: ModelArch, req: EstimateRequest) -> float:
    """AdamW keeps two moments per trainable parameter [ANATOMY, TM101]. torch.optim.AdamW creates
    them like the parameter: fp32 adapters -> 8 bytes; pure-bf16 full fine-tuning -> 4 bytes; with
    an fp32-loaded model trained with autocast (``master_weights``, [ZERO]'s 16 B/param) -> 8 bytes. 8-bit AdamW [BNB8]: 2 bytes plus
    fp32 absmax per 2048-element block and moment. The paged variant needs the same bytes but
    lives in CUDA unified memory, so under pressure it is evicted to CPU instead of failing."""
    n = trainable_params(arch, req)
    if req.optimizer in ("adamw_8bit", "paged_adamw_8bit"):
        return n * (2 + 2 * 4 / 2048)
    state = 4 if (req.is_peft or req.master_weights) else BYTES[req.dtype]
    return n * 2 * state


def master_weight_bytes(arch: ModelArch, req: EstimateRequest) -> float:
    """HF Trainer's mixed precision keeps no separate master copy: the model is loaded in fp32 (its
    weights are the master, counted in ``base_weights``) and autocast makes 16-bit copies per op.
    So 0; kept as a part name for requests that still ask for it."""
    return 0.0


def optimizer_step_bytes(arch: ModelArch, req: EstimateRequest) -> float:
    """The temporary of ``optimizer.step()``: foreach AdamW's square-root list, one state-sized
    tensor per trainable parameter [TORCHADAM]; fused and 8-bit kernels need none."""
    if req.optimizer != "adamw":
        return 0.0
    state = 4 if (req.is_peft or req.master_weights) else BYTES[req.dtype]
    return trainable_params(arch, req) * state


def dora_workspace_bytes(arch: ModelArch, req: EstimateRequest) -> float:
    """DoRA's weight-norm work per adapted layer, in the adapter dtype [PEFTDORA]: the identity
    (in x in) and its LoRA product (in x out), the base weight cast (out x in), s*BA and W + s*BA
    (out x in each). Temporaries of one layer at a time: the largest adapted layer counts."""
    if req.method != "dora":
        return 0.0
    a = adapter_bytes(req)
    return max((a * (l.fan_in * l.fan_in + 4 * l.fan_in * l.fan_out) for l, _ in adapted_linears(arch, req)),
               default=0.0)


def boft_buffer_bytes(arch: ModelArch, req: EstimateRequest) -> float:
    """[BOFT] peft 0.21 registers per adapted layer a dense fp32 permutation buffer ``boft_P`` of
    ``factor x in x in`` (tuners/boft/layer.py ``update_layer``): small parameters, square-size buffers."""
    if req.method != "boft":
        return 0.0
    return sum(4.0 * req.boft_butterfly_factor * l.fan_in ** 2 * n for l, n in adapted_linears(arch, req))


def boft_workspace_bytes(arch: ModelArch, req: EstimateRequest) -> float:
    """[BOFT] what peft's BOFT forward keeps for backward, per adapted layer, counted from its code (not
    measured: BOFT does not run on the CPU machines): the block-diagonal matrix and the two permutation
    products per factor, the chain of factor products, the identity and the rotation -- about
    ``(4 factor + 1) in^2`` fp32 numbers -- plus, per token, the layer's input (for the rotation's gradient)
    and its output before the scale, in the compute dtype. With gradient checkpointing only one block's
    in^2 terms are alive at a time."""
    if req.method != "boft":
        return 0.0
    layers = adapted_linears(arch, req)
    square = sum(4.0 * (4 * req.boft_butterfly_factor + 1) * l.fan_in ** 2 * n for l, n in layers)
    if req.gradient_checkpointing and arch.layers:
        square /= arch.layers
    tokens = req.batch_size * llm_seq_len(arch, req)
    per_token = sum(BYTES[req.dtype] * (l.fan_in + l.fan_out) * n for l, n in layers)
    return square + (0.0 if req.gradient_checkpointing else tokens * per_token)


def adalora_importance_bytes(arch: ModelArch, req: EstimateRequest) -> float:
    """[ADALORA] peft's RankAllocator: ipt, exp_avg_ipt and exp_avg_unc per adapter parameter, fp32."""
    return 3 * 4 * adapter_params(arch, req) if req.method == "adalora" else 0.0


# -- activations -------------------------------------------------------------------------------

_ROLE = {"q_proj": "in", "k_proj": "in", "v_proj": "in", "qkv_proj": "in", "attn.qkv": "in",
         "o_proj": "o", "attn.proj": "o", "gate_proj": "mlp_in", "up_proj": "mlp_in", "gate_up_proj": "mlp_in",
         "mlp.gate_proj": "mlp_in", "mlp.up_proj": "mlp_in", "mlp.fc1": "mlp_in",
         "down_proj": "down", "mlp.down_proj": "down", "mlp.fc2": "down"}


@dataclass(frozen=True)
class Block:
    """What one transformer block saves for backward depends on these shapes only."""

    hidden: int
    q_dim: int
    kv_dim: int
    heads: int
    inter: int
    norms: int
    linears: tuple[Linear, ...]
    gated: bool = True


def has_padding_mask(req: EstimateRequest) -> bool:
    """A padded batch of several rows carries an attention mask; one row, or padding-free rows
    (position ids instead of a mask), carry none."""
    return req.batch_size > 1 and not (req.padding_free or req.packing)


def text_block(arch: ModelArch, attention: str, masked: bool = True) -> Block:
    """Eager attention always calls ``repeat_kv`` (GQA keys/values materialized for every query
    head); SDPA only with an attention mask [SDPAGQA]; flash-attention-2 reads grouped heads."""
    repeat = attention == "eager" or (attention == "sdpa" and masked)
    kv = arch.q_dim if repeat else arch.kv_dim
    return Block(arch.hidden, arch.q_dim, kv, arch.heads, arch.intermediate, arch.norms_per_layer,
                 tuple(arch.layer_linears()))


def vision_block(v: VisionArch) -> Block:
    return Block(v.hidden, v.hidden, v.hidden, v.heads, v.intermediate, 2, tuple(v.block_linears()), v.gated)


def dropout_mask_bytes(req: EstimateRequest, cpu: bool) -> int:
    """Bytes per element of the mask a peft ``lora_dropout`` (an ``nn.Dropout`` on the adapter's
    input, in the adapter dtype) keeps for backward. On CUDA ``native_dropout`` keeps a bool mask
    (1 byte); on CPU ``at::dropout`` is not fused and computes ``input * noise``, keeping the noise
    tensor in the input's dtype. Measured (SmolLM2-135M, LoRA r=8, dropout 0.05, bf16, CPU): every
    adapted linear saves an fp32 tensor of fan_in per token from its Dropout module besides
    lora_A's fp32 input -- 65-68 KiB/token per projection over 30 layers, 2304 B = 4 x 576 each."""
    if not req.is_peft or req.lora_dropout <= 0:
        return 0
    return adapter_bytes(req) if cpu else 1


def _saved_by_linears(block: Block, adapted: set[str], weights_train: bool, c: int, a: int, r: int,
                      dora: bool, mask: int = 0, ia3_feedforward: tuple | None = None,
                      o_input_is_attention_output: bool = False) -> float:
    """Inputs the linears keep: a linear saves its input only if its weight trains [FROZENLIN]. A
    peft LoRA layer casts its input to the adapter dtype first (``_cast_input_dtype``), so with fp32
    adapters on a 16-bit model each adapted layer keeps its own fp32 copy of the input; with
    ``lora_dropout`` > 0 also the dropout's mask (``mask`` bytes per input element).
    ``ia3_feedforward`` (IA3 only: its feed-forward module names): [PEFTIA3] feed-forward layers keep
    their input in the vector's dtype, the others their 16-bit output.
    ``o_input_is_attention_output``: o_proj's input is the tensor a fused attention kernel already
    saved [SDPAOUT], so keeping it costs nothing more."""
    roles_saved = set()
    total = 0.0
    for l in block.linears:
        if ia3_feedforward is not None and l.name in adapted:
            if l.name in ia3_feedforward or l.name.rsplit(".", 1)[-1] in ia3_feedforward:
                if a == c:  # ``x.to(dtype)`` is the input itself, shared with the layer's other readers
                    roles_saved.add(_ROLE[l.name])
                else:
                    total += a * l.fan_in
            else:
                total += c * l.fan_out
            continue
        if weights_train or (l.name in adapted and a == c):
            roles_saved.add(_ROLE[l.name])
        if l.name in adapted:
            total += (a * l.fan_in if a != c else 0) + a * r  # fp32 input copy, lora_A output
            total += mask * l.fan_in  # dropout mask (0 without dropout)
            if dora:  # base result and LoRA result are kept for the magnitude rescaling
                total += (c + a) * l.fan_out
    width = {"in": block.hidden, "o": 0 if o_input_is_attention_output else block.q_dim, "mlp_in": block.hidden,
             "down": block.inter}
    return total + sum(c * width[role] for role in roles_saved)


def block_saved_per_token(block: Block, req: EstimateRequest, adapted: set[str], weights_train: bool,
                          attn_span: float, cpu: bool = False) -> float:
    """Bytes one block keeps for backward per token, counted tensor by tensor [KORTH method]:

    - each RMSNorm keeps its fp32 input (HF upcasts to fp32): 4h; if its weight trains, also the
      normalized 16-bit tensor: c*h;
    - attention kernel inputs q, k, v (k/v after ``repeat_kv``) and its output: c*(q + 2kv + q),
      plus the fp32 logsumexp per head for fused kernels [FLASH] -- their output is also o_proj's
      input [SDPAOUT]; eager attention instead keeps the fp32 softmax and its 16-bit copy:
      heads * span * (4 + c) per token (the s^2 term of [KORTH]) and not its output (the matmul
      with v saves its inputs; o_proj's input is a ``contiguous()`` copy, kept only when o_proj
      needs it) -- measured like [SDPAOUT];
    - SwiGLU: gate output (for SiLU), SiLU output and up output (for the product): 3*c*i;
    - linear inputs where weights train, adapter extras (``_saved_by_linears``).
    """
    c, a = compute_bytes(req), adapter_bytes(req)
    h = block.hidden
    norms = block.norms * (4 * h + (c * h if weights_train else 0))
    attn = c * (block.q_dim + 2 * block.kv_dim)
    if req.attention == "eager":  # the output (softmax @ v) is not saved: o_proj keeps its own copy if at all
        attn += block.heads * attn_span * (4 + c)
    else:
        attn += c * block.q_dim + 4 * block.heads
    mlp = (3 if block.gated else 2) * c * block.inter
    lin = _saved_by_linears(block, adapted, weights_train, c, a, adapter_rank(req), req.method == "dora",
                            dropout_mask_bytes(req, cpu), tuple(req.feedforward) if req.method == "ia3" else None,
                            o_input_is_attention_output=req.attention != "eager")
    return norms + attn + mlp + lin


def _adapted_names(block: Block, req: EstimateRequest, applies: bool) -> set[str]:
    if not (req.is_peft and applies):
        return set()
    return {l.name for l in _targeted(list(block.linears), req.targets)}


def text_layer_bytes_per_token(arch: ModelArch, req: EstimateRequest, seq: int, cpu: bool = False) -> float:
    block = text_block(arch, req.attention, has_padding_mask(req))
    adapted = _adapted_names(block, req, True)
    return block_saved_per_token(block, req, adapted, not req.is_peft, seq, cpu)


def residual_bytes(req: EstimateRequest) -> int:
    """Residual stream dtype: fp32 when the embeddings are fp32 -- after prepare_model_for_kbit_training,
    or an fp32-loaded model under autocast (fp32 embedding output + 16-bit block output adds in fp32)."""
    return 4 if (upcast_rest(req) or weight_bytes_each(req) == 4) else compute_bytes(req)


def text_activation_bytes(arch: ModelArch, req: EstimateRequest, seq: int, cpu: bool = False) -> tuple[float, float]:
    """(all layers' saved activations, one layer's) for ``batch_size`` sequences of ``seq`` tokens.

    Without checkpointing every layer keeps its tensors until backward reaches it. HF gradient
    checkpointing keeps only each decoder layer's input (residual dtype * h per token) and
    recomputes one layer at a time in backward, so one layer's full set is live at the peak
    ([KORTH] section 4.2, "full activation recomputation"). The final norm's fp32 input, and for
    full fine-tuning the LM head's input, are saved outside the layers.
    """
    tokens = req.batch_size * seq
    per_layer = text_layer_bytes_per_token(arch, req, seq, cpu) * tokens
    tail = tokens * (4 * arch.hidden + (2 * compute_bytes(req) * arch.hidden if not req.is_peft else 0))
    if req.gradient_checkpointing:
        kept = tokens * arch.layers * residual_bytes(req) * arch.hidden
        return kept + per_layer + tail, per_layer
    return arch.layers * per_layer + tail, per_layer


# TRL 1.x ``trl/kernels/chunked_logprob.py``: the fused LM head projects tiles of at most
# TOKEN_CHUNK_SIZE tokens x ``_CHUNKED_LOGPROB_CHUNK_SIZE`` vocabulary columns (trl/trainer/utils.py).
TRL_TOKEN_TILE = 4096
TRL_VOCAB_TILE = 32768
# Bytes per tile element at the peak of the fused head's torch fallback (devices without Triton,
# i.e. CPU), in ``_backward_tile`` at ``grad += grad_logprobs * (is_target.float() - p)``: the
# compute-dtype tile buffer (c) plus the fp32 ``y``, ``z``, ``log_p``, ``p``, ``grad`` (5 x 4),
# the bool ``is_target`` (1) and three fp32 temporaries of that expression (3 x 4): c + 33.
# With Triton (CUDA) the fold is in-kernel: only the tile buffer (c) exists.
TRL_CPU_TILE_EXTRA = 33


def fused_head_bytes(arch: ModelArch, req: EstimateRequest, seq: int, cpu: bool) -> float:
    """TRL SFTTrainer's fused LM head (``add_fused_lm_head``, outputs log_probs/entropy/is_top1):
    the (tokens x vocab) logits never exist. Per-token outputs are a few fp32 scalars; the peak is
    one projection tile, [min(tokens, 4096), min(vocab, 32768)], reused for every tile in forward
    and recomputed in backward. On CPU the tile is folded with torch ops whose fp32 temporaries
    dominate (see ``TRL_CPU_TILE_EXTRA``); on a Triton device only the tile buffer is allocated.
    Measured on CPU (SmolLM2-135M, bf16, 2x256 tokens): peak RSS of a step minus saved activations
    and weights leaves ~1.1 MiB/token, = (2 + 33) x 32768 bytes."""
    tokens = min(req.batch_size * seq, TRL_TOKEN_TILE)
    c = compute_bytes(req)
    per_elem = c + (TRL_CPU_TILE_EXTRA if cpu else 0)
    return tokens * min(arch.vocab, TRL_VOCAB_TILE) * per_elem


def logits_bytes(arch: ModelArch, req: EstimateRequest, seq: int, cpu: bool = False) -> float:
    """Logits over the vocabulary at their peak, which is the start of backward.

    HF's causal-LM loss does ``logits.float()`` then cross-entropy: the model's logits (kept in the
    output, c bytes), log_softmax's fp32 output (saved), and in backward nll's fp32 gradient and
    log_softmax's fp32 gradient coexist: V * (c + 12) bytes per token. With fp32 logits
    (fp32 model or an fp32 LM head after prepare_model_for_kbit_training) ``.float()`` is a no-op
    and it is V * 16. Gemma-2's final softcapping (tanh) keeps one more copy and its gradient.
    This is often the largest single term for small models with large vocabularies.
    With ``trainer="trl-sft"`` the studio's trainer uses TRL's fused head instead: ``fused_head_bytes``.
    """
    if req.trainer == "trl-sft":
        return fused_head_bytes(arch, req, seq, cpu)
    tokens = req.batch_size * seq
    c = 4 if (compute_bytes(req) == 4 or upcast_rest(req)) else compute_bytes(req)
    per_token = arch.vocab * (c + 12)
    if arch.logit_softcap:
        per_token += arch.vocab * 2 * c
    return tokens * per_token


# -- vision (Qwen2.5-VL) -----------------------------------------------------------------------

def image_patches(v: VisionArch, max_pixels: int) -> int:
    """14x14-pixel patches of one image resized to at most ``max_pixels`` [QWENVL]. An image is
    repeated over ``temporal_patch_size`` frames that fold into one temporal patch."""
    return max_pixels // (v.patch * v.patch)


def image_tokens(v: VisionArch, max_pixels: int) -> int:
    """LLM tokens per image: patches merged 2x2 -> max_pixels / (28*28) [QWENVL]."""
    return image_patches(v, max_pixels) // (v.merge * v.merge)


def vision_attention_span(v: VisionArch, patches_per_image: int) -> float:
    """Mean keys per query over the blocks: windows of (112/14)^2 = 64 patches, and the whole
    image in the ``fullatt_block_indexes`` blocks."""
    window = min(patches_per_image, (v.window // v.patch) ** 2) if v.window else patches_per_image
    full = len(v.full_att_blocks) if v.window else v.depth
    return (full * patches_per_image + (v.depth - full) * window) / v.depth


def vision_activation_bytes(arch: ModelArch, req: EstimateRequest) -> float:
    """Vision tower activations for ``batch_size * images_per_sample`` images.

    Frozen tower (the default): no autograd graph is built through it, so only one block's working
    set is live at a time (q, k, v, output, MLP intermediates) plus the merged image embeddings.
    Trained tower (``tune_vision`` or full FT with it): each block saves its tensors like a decoder
    layer does; with gradient checkpointing only block inputs plus one block are kept.
    """
    v = arch.vision
    if not v or req.images_per_sample <= 0:
        return 0.0
    c = compute_bytes(req)
    per_image = image_patches(v, req.max_pixels)
    patches = req.batch_size * req.images_per_sample * per_image
    if req.seq_from_data:  # image tokens are part of the batch's tokens: at most merge^2 patches each
        patches = min(patches, req.batch_size * req.seq_len * v.merge * v.merge)
    span = vision_attention_span(v, per_image)
    block = vision_block(v)
    embeds = patches // (v.merge ** 2) * v.out_hidden * c
    if not req.tune_vision:
        scratch = patches * c * (4 * v.hidden + 3 * v.intermediate)
        if req.attention == "eager":
            scratch += req.batch_size * req.images_per_sample * v.heads * per_image * per_image * (4 + c)
        return scratch + embeds
    per_block = block_saved_per_token(block, req, _adapted_names(block, req, True), not req.is_peft, span) * patches
    if req.gradient_checkpointing:
        return patches * v.depth * c * v.hidden + per_block + embeds
    return v.depth * per_block + embeds


def llm_seq_len(arch: ModelArch, req: EstimateRequest) -> int:
    """The decoder's sequence: the cut-off, raised if the images alone need more tokens (not when it
    came from the dataset: its row lengths hold the image tokens already)."""
    if not arch.vision or req.images_per_sample <= 0 or req.seq_from_data:
        return req.seq_len
    return max(req.seq_len, req.images_per_sample * image_tokens(arch.vision, req.max_pixels) + 16)


# -- inference ---------------------------------------------------------------------------------

def kv_cache_bytes(arch: ModelArch, context: int, batch: int, c: int) -> float:
    """Keys and values of every layer for every cached token: 2 * L * kv_heads * head_dim * c
    bytes per token [TM101, "KV cache"]. HF's cache stores the grouped (un-repeated) heads."""
    return 2 * arch.layers * arch.kv_dim * c * context * batch


def prefill_scratch_bytes(arch: ModelArch, tokens: int, heads_span: int, c: int, eager: bool) -> float:
    """One layer's transient tensors while the prompt is processed (nothing is saved for backward):
    normed input, q, k, v (repeated), output, and the MLP's gate/up/product."""
    per_token = c * (2 * arch.hidden + 3 * arch.q_dim + 3 * arch.intermediate)
    scratch = tokens * per_token
    if eager:
        scratch += arch.heads * tokens * heads_span * (4 + c)
    return scratch
