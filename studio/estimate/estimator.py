"""Peak memory of a training run (per device) and of inference, as named parts.

The peak of a training step is at the start of backward: weights, optimizer state, every saved
activation and the loss' logits buffers are all alive then. Full fine-tuning is the exception
that is handled: its gradients appear while activations are freed, and ``optimizer.step()`` adds
a temporary as large as a state, so the peak is the largest of three moments (``_full_ft_peak``).

With the dataset's token lengths (``req.data``) the batch is the longest that can occur; the
estimate then also carries the worst case at the cut-off (``Estimate.worst_case_bytes``).
"""
from __future__ import annotations

from typing import Any

from studio.estimate import formulas as f
from studio.estimate.arch import ModelArch
from studio.estimate.request import BYTES, GIB, Estimate, EstimateRequest
from studio.estimate import calibration
from studio.estimate.data import TokenLengths


class EstimateError(ValueError):
    """The request cannot be estimated; the message lists every problem."""


def _check(req: EstimateRequest) -> ModelArch:
    problems = req.problems()
    if problems:
        raise EstimateError("; ".join(problems))
    return ModelArch.from_config(req.config)


def _static_parts(arch: ModelArch, req: EstimateRequest) -> dict[str, float]:
    return {
        "base_weights": f.text_weight_bytes(arch, req),
        "vision_weights": f.vision_weight_bytes(arch, req),
        "adapter_weights": f.adapter_params(arch, req) * f.adapter_bytes(req),
        "optimizer_states": f.optimizer_state_bytes(arch, req),
        "master_weights": f.master_weight_bytes(arch, req),
        "adalora_importance": f.adalora_importance_bytes(arch, req),
        "boft_buffers": f.boft_buffer_bytes(arch, req),
    }


def _dynamic_parts(arch: ModelArch, req: EstimateRequest, cpu: bool = False) -> dict[str, float]:
    seq = f.llm_seq_len(arch, req)
    acts, _ = f.text_activation_bytes(arch, req, seq, cpu)
    return {
        "gradients": f.gradient_bytes(arch, req),
        "activations": acts,
        "logits": f.logits_bytes(arch, req, seq, cpu),
        "vision_activations": f.vision_activation_bytes(arch, req),
        "dequant_workspace": f.dequant_workspace_bytes(arch, req),
        "dora_workspace": f.dora_workspace_bytes(arch, req),
        "boft_workspace": f.boft_workspace_bytes(arch, req),
    }


def _training_parts(arch: ModelArch, req: EstimateRequest, gpu: bool) -> tuple[dict[str, float], list[str]]:
    """All parts at the peak; ``gpu`` adds the multi-GPU buffers and sharding."""
    parts = {**_static_parts(arch, req), **_dynamic_parts(arch, req, cpu=not gpu)}
    notes = _distributed(arch, req, parts) if gpu else []
    if not req.is_peft:
        _, one_layer = f.text_activation_bytes(arch, req, f.llm_seq_len(arch, req), cpu=not gpu)
        parts.update(_full_ft_peak(arch, req, parts, one_layer))
    return parts, notes


def _full_ft_peak(arch: ModelArch, req: EstimateRequest, parts: dict[str, float], one_layer: float) -> dict:
    """Full FT: HF Trainer frees gradients after each optimizer step (``zero_grad(set_to_none=True)``),
    so they grow during backward while activations shrink. The largest of:
    - start of backward: activations + logits + the LM head's gradient (computed first) -- or, with
      gradient accumulation, all gradients kept from the earlier micro-batches;
    - end of backward: all gradients + one layer's activations;
    - ``optimizer.step()``: all gradients + the optimizer's temporary [TORCHADAM]."""
    grads = parts["gradients"]
    head_grad = grads if req.grad_accum > 1 else arch.vocab * arch.hidden * f.trainable_bytes_each(req)
    step = f.optimizer_step_bytes(arch, req)
    if req.num_gpus > 1 and req.strategy == "fsdp":  # each rank steps its own shard
        step /= req.num_gpus
    moments = {
        "start": {"gradients": head_grad},
        "end": {"gradients": grads, "activations": one_layer, "logits": 0.0, "vision_activations": 0.0},
        "step": {"gradients": grads, "optimizer_step": step, "activations": 0.0, "logits": 0.0,
                 "vision_activations": 0.0},
    }
    def total(name: str) -> float:
        return sum({**parts, **moments[name]}.values())
    return moments[max(moments, key=total)]


def _distributed(arch: ModelArch, req: EstimateRequest, parts: dict[str, float]) -> list[str]:
    """DDP keeps a full replica per GPU plus gradient buckets (a copy of the gradients);
    FSDP (full shard) divides weights, gradients and optimizer state by the GPU count and
    all-gathers about two layers' weights at a time."""
    if req.num_gpus <= 1:
        return []
    if req.strategy == "ddp":
        parts["ddp_buckets"] = f.gradient_bytes(arch, req)
        return [f"DDP on {req.num_gpus} GPUs: every GPU holds a full replica; numbers are per GPU"]
    for name in ("base_weights", "vision_weights", "adapter_weights", "optimizer_states", "master_weights",
                 "gradients", "adalora_importance"):
        parts[name] = parts.get(name, 0.0) / req.num_gpus
    layer = arch.layer_linear_params * (1 if req.method != "qlora" else 0.5) * BYTES[req.dtype]
    parts["fsdp_gather"] = 2 * layer
    return [f"FSDP over {req.num_gpus} GPUs: weights, gradients and optimizer state sharded; numbers are per GPU"]


def _notes(arch: ModelArch, req: EstimateRequest, parts: dict[str, float]) -> list[str]:
    notes = []
    seq = f.llm_seq_len(arch, req)
    if seq != req.seq_len:
        notes.append(f"{req.images_per_sample} image(s) of {req.max_pixels} px need "
                     f"{req.images_per_sample * f.image_tokens(arch.vision, req.max_pixels)} tokens: "
                     f"sequence raised from {req.seq_len} to {seq}")
    if req.images_per_sample and not arch.vision:
        notes.append("images_per_sample ignored: the model has no vision tower")
    if arch.max_positions and seq > arch.max_positions:
        notes.append(f"sequence {seq} exceeds the model's max_position_embeddings {arch.max_positions}")
    biggest = max(parts, key=parts.get)
    notes.append(f"largest part: {biggest} ({parts[biggest] / GIB:.2f} GiB)")
    if req.optimizer == "paged_adamw_8bit":
        notes.append("paged optimizer: its states can be evicted to CPU under pressure, so a run may "
                     "fit with up to that part less memory (slower)")
    if f.upcast_rest(req):
        notes.append("qlora: non-quantized parameters (embeddings, norms, LM head, vision tower) counted "
                     "in fp32, as after peft's prepare_model_for_kbit_training")
    if req.attention == "eager":
        notes.append("eager attention materializes seq x seq scores per head; sdpa/flash do not")
    return notes


def _round(parts: dict[str, float]) -> dict[str, int]:
    return {k: int(round(v)) for k, v in parts.items() if round(v) > 0}


TRANSIENT = ("activations", "logits", "vision_activations", "dequant_workspace", "dora_workspace", "optimizer_step")


def estimate(req: EstimateRequest) -> Estimate:
    """Peak GPU memory per device of a training step, broken into named parts, with its expected
    error band. With ``req.data`` the parts are for the longest batch of the data, and
    ``worst_case_bytes`` is the estimate at the cut-off."""
    arch = _check(req)
    if req.data is None:
        return _gpu_estimate(arch, req)
    run, rows_cut, exact = for_data(req)
    worst = _gpu_estimate(arch, req.with_(data=None))
    est = _gpu_estimate(arch, run)
    shape = f"{run.batch_size} x {run.seq_len}" if not (req.padding_free or req.packing) else f"{run.seq_len} tokens"
    notes = [f"for your data: the longest batch is {shape} (cut-off {req.seq_len}); worst case at the cut-off "
             f"{worst.total_gib:.1f} GiB; {rows_cut}{'' if exact else ' (about)'} of {req.data.rows} rows longer "
             f"than the cut-off would be cut"]
    return Estimate(parts=est.parts, total_bytes=est.total_bytes, notes=notes + est.notes, params=est.params,
                    context_bytes=est.context_bytes, band=est.band, worst_case_bytes=worst.total_bytes,
                    rows_cut=rows_cut, rows_cut_exact=exact, data_rows=req.data.rows)


def estimate_for_data(req: EstimateRequest, stats: Any) -> Estimate:
    """The Train tab's call: the estimate for the dataset's longest batch (``total_bytes``), the worst
    case at the cut-off (``worst_case_bytes``), the rows the cut-off cuts (``rows_cut``) and the
    expected error (``band``). ``stats``: the dataset's token statistics (``DatasetStats`` or its dict,
    or a ``TokenLengths``); None gives the cut-off estimate alone."""
    if stats is None:
        return estimate(req)
    data = stats if isinstance(stats, TokenLengths) else TokenLengths.from_stats(stats)
    return estimate(req.with_(data=data))


def for_data(req: EstimateRequest) -> tuple[EstimateRequest, int, bool]:
    """(the request for the data's longest batch, rows longer than the cut-off, exact?)."""
    data = req.data
    rows, seq = data.batch_tokens(req.batch_size, req.seq_len, req.padding_free, req.packing)
    rows_cut, exact = data.rows_over(req.seq_len)
    run = req.with_(data=None, batch_size=rows, seq_len=seq, seq_from_data=True)
    return run, rows_cut, exact


def _gpu_estimate(arch: ModelArch, req: EstimateRequest) -> Estimate:
    parts, notes = _training_parts(arch, req, gpu=True)
    transient = sum(parts.get(k, 0.0) for k in TRANSIENT)
    parts["allocator_fragmentation"] = f.FRAGMENTATION * transient
    parts["cuda_context"] = f.CUDA_CONTEXT_BYTES
    rounded = _round(parts)
    total = sum(rounded.values())
    return Estimate(parts=rounded, total_bytes=total, notes=notes + _notes(arch, req, parts),
                    params=_param_summary(arch, req), context_bytes=rounded["cuda_context"],
                    band=calibration.band_for(req), worst_case_bytes=total)


def estimate_cpu_training(req: EstimateRequest, runtime_baseline_bytes: int = 0) -> Estimate:
    """The parts of ``estimate`` that exist when training on CPU: weights, adapters, gradients,
    optimizer state, activations, logits (no CUDA context, no GPU allocator). Compare with a
    measured peak RSS minus the process's RSS before loading the model, or pass that baseline
    as ``runtime_baseline_bytes`` to include it as a part."""
    arch = _check(req)
    parts, _ = _training_parts(arch, req, gpu=False)
    notes = ["CPU: GPU-only parts (CUDA context, allocator fragmentation, DDP/FSDP buffers) left out"]
    load_extra = _cpu_load_excess(arch, req, parts)
    if load_extra > 0:
        parts["checkpoint_load_excess"] = load_extra
        notes.append("the peak is while loading: the checkpoint's pages (mapped from disk) and the converted "
                     "weights are resident together, more than a training step needs")
    if runtime_baseline_bytes:
        parts["runtime_baseline"] = float(runtime_baseline_bytes)
    rounded = _round(parts)
    return Estimate(parts=rounded, total_bytes=sum(rounded.values()), notes=notes + _notes(arch, req, parts),
                    params=_param_summary(arch, req))


def _cpu_load_excess(arch: ModelArch, req: EstimateRequest, parts: dict[str, float]) -> float:
    """How far the model-loading peak exceeds the training step's (0 if it does not).

    On CPU peak RSS also counts file-backed pages. ``from_pretrained`` mmaps the safetensors file;
    when its dtype differs from the training dtype every tensor is read (its pages become resident)
    and converted into a new anonymous tensor, so at the end of loading RSS holds the whole file
    plus the converted weights; the mapping is released afterwards. Measured with SmolLM2-135M (fp32
    file of 538 MB, trained in bf16): RssFile +518 MiB and RssAnon +260 MiB during loading, back to
    +7 MiB file pages after it -- the peak of a short-sequence run (1 x 128 tokens) is this one.
    The file's dtype is the config's ``torch_dtype``/``dtype`` (fp32 when absent). When it equals
    the training dtype the mapped pages are used as the weights, so nothing extra is counted.
    """
    stored = req.config.get("torch_dtype") or req.config.get("dtype") or (req.config.get("text_config") or {}).get(
        "torch_dtype") or "float32"
    stored_bytes = {"float32": 4, "float16": 2, "bfloat16": 2}.get(str(stored).replace("torch.", ""), 4)
    if req.method == "qlora" or stored_bytes == BYTES[req.dtype]:
        return 0.0
    file_bytes = (arch.text_params + arch.vision_params) * stored_bytes
    load_peak = parts.get("base_weights", 0.0) + parts.get("vision_weights", 0.0) + file_bytes
    return max(0.0, load_peak - sum(parts.values()))


def _param_summary(arch: ModelArch, req: EstimateRequest) -> dict[str, int]:
    return {"total": arch.total_params, "text": arch.text_params, "vision": arch.vision_params,
            "trainable": f.trainable_params(arch, req)}


def estimate_inference(config: dict, context_len: int = 4096, batch_size: int = 1, dtype: str = "bf16",
                       quant_bits: int | None = None, attention: str = "sdpa", images: int = 0,
                       max_pixels: int = 1003520) -> Estimate:
    """Chat / generation memory: weights + KV cache for ``context_len`` tokens per sequence +
    one layer's prefill scratch + the vision tower's forward for ``images`` images."""
    method = "qlora" if quant_bits else "lora"
    req = EstimateRequest(config=config, method=method, quant_bits=quant_bits or 4, dtype=dtype,
                          batch_size=batch_size, seq_len=context_len, attention=attention,
                          images_per_sample=images, max_pixels=max_pixels, kbit_fp32_upcast=False, lora_rank=1)
    arch = _check(req)
    c = BYTES[dtype]
    parts = {"base_weights": f.text_weight_bytes(arch, req), "vision_weights": f.vision_weight_bytes(arch, req),
             "kv_cache": f.kv_cache_bytes(arch, context_len, batch_size, c),
             "prefill_scratch": f.prefill_scratch_bytes(arch, batch_size * context_len, context_len, c,
                                                       attention == "eager"),
             "logits": batch_size * arch.vocab * 4 * 2,  # generate() keeps only the last position's logits
             "vision_activations": f.vision_activation_bytes(arch, req)}
    parts["allocator_fragmentation"] = f.FRAGMENTATION * (parts["kv_cache"] + parts["prefill_scratch"])
    parts["cuda_context"] = f.CUDA_CONTEXT_BYTES
    rounded = _round(parts)
    notes = [f"KV cache: {context_len} tokens x batch {batch_size}"]
    return Estimate(parts=rounded, total_bytes=sum(rounded.values()), notes=notes,
                    params={"total": arch.total_params, "text": arch.text_params, "vision": arch.vision_params},
                    context_bytes=rounded["cuda_context"])
