"""The parts of bench/gpu_check.py that touch torch: models, data, training, chat, merge.

Each ``*_part`` function returns a dict of figures, raises :class:`Skip` with a reason, or raises
any other exception (the check records it as failed). Only the studio's public functions are
called: the recipe (``studio.training.recipe.train``), its pre-flight, the planner's estimate, the
chat engine and the export's merge/verify steps, exactly as the worker calls them.
"""
from __future__ import annotations

import gc
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


class Skip(Exception):
    """A part that cannot run here; the message says why."""


# -- model sizes -----------------------------------------------------------------------------------
# ~1.0 B parameters, Llama 3.2-1B-like layout (tied embeddings, GQA 4:1) on the Qwen2.5 vocabulary:
# embedding 151,936 x 2048 = 311 M + 16 layers x 45 M.
LLAMA_1B = {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 16, "num_attention_heads": 32,
            "num_key_value_heads": 8, "initializer_range": 0.02}
# CPU mode: seconds per step on two cores. Larger init than 0.02 so a few steps move the loss (see
# studio/models/tiny_qwen_vl.py: SMALL_VOCAB_INIT_RANGE).
LLAMA_TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "initializer_range": 0.1}
SMALL_VOCAB_RANKS = 2026  # + 22 Qwen special tokens = 2048 ids (as the small-vocab tiny Qwen2.5-VL)


@dataclass(frozen=True)
class Sizes:
    """How big the check runs: the GPU size, or ``--tiny`` (CI on a CPU in < 2 minutes)."""

    tiny: bool
    steps: int
    batch_size: int
    cutoff_len: int
    learning_rate: float
    chat_tokens: int

    @classmethod
    def pick(cls, tiny: bool) -> Sizes:
        if tiny:
            return cls(tiny=True, steps=3, batch_size=2, cutoff_len=128, learning_rate=1e-3, chat_tokens=8)
        return cls(tiny=False, steps=12, batch_size=8, cutoff_len=1024, learning_rate=1e-3, chat_tokens=64)


# -- environment ----------------------------------------------------------------------------------------
def environment_part(device: str) -> dict[str, Any]:
    import importlib.metadata as md

    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars: a log to read, not bars
    figures: dict[str, Any] = {"python": sys.version.split()[0], "torch": torch.__version__,
                               "cuda_available": torch.cuda.is_available()}
    for dist in ("transformers", "peft", "trl", "accelerate", "datasets", "bitsandbytes", "pydantic", "sqlalchemy"):
        try:
            figures[dist] = md.version(dist)
        except md.PackageNotFoundError:
            figures[dist] = None
    sys.path.insert(0, str(ROOT / "bench"))
    from machine import describe

    figures["cpu"] = describe()
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda but torch sees no CUDA device")
        props = torch.cuda.get_device_properties(0)
        figures.update(gpu=props.name, gpu_memory_bytes=int(props.total_memory), cuda=torch.version.cuda,
                       bf16_supported=torch.cuda.is_bf16_supported(), capability=f"{props.major}.{props.minor}")
    return figures


def precision_for(device: str) -> str:
    """bf16 on the GPU (the check's subject); on a CPU what the studio's ``auto`` picks there."""
    from studio.training.device import resolve_precision

    return "bf16" if device == "cuda" else resolve_precision("auto")


def matmul_peak_part(device: str, tiny: bool) -> dict[str, Any]:
    """The matmul FLOP/s this device reaches in the training precision: the denominator of MFU."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}[precision_for(device)]
    n, reps = (8192, 10) if device == "cuda" else ((256 if tiny else 1024), 5)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    started = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    seconds = (time.perf_counter() - started) / reps
    del a, b
    return {"dtype": str(dtype).replace("torch.", ""), "n": n, "reps": reps, "seconds_per_matmul": seconds,
            "peak_flops": 2 * n**3 / seconds, "peak_tflops": round(2 * n**3 / seconds / 1e12, 3)}


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


# -- models ---------------------------------------------------------------------------------------------
def build_text_model(folder: Path, device: str, tiny: bool) -> dict[str, Any]:
    """A Llama-architecture model with random weights (fixed seed) and the real Qwen2.5 tokenizer
    (``--tiny``: its first 2,026 merges), saved as a plain Hugging Face folder."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from studio.models.qwen_tokenizer import build_qwen2_tokenizer

    started = time.perf_counter()
    tokenizer = build_qwen2_tokenizer(vocab_limit=SMALL_VOCAB_RANKS if tiny else None)
    tokenizer_s = time.perf_counter() - started
    eos, pad = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")
    vocab = 2048 if tiny else 151936  # the released Qwen2.5 embedding size (151,665 padded to 128)
    config = LlamaConfig(vocab_size=vocab, max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=True,
                         rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
                         bos_token_id=pad, eos_token_id=eos, pad_token_id=pad, **(LLAMA_TINY if tiny else LLAMA_1B))
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(1234)
    with torch.device(device):  # initialising 1 B parameters on the GPU takes a second, on a CPU a minute
        model = LlamaForCausalLM(config).to(dtype)
    model.generation_config = GenerationConfig(bos_token_id=pad, pad_token_id=pad, eos_token_id=[eos, pad],
                                               do_sample=False)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    parameters = sum(p.numel() for p in model.parameters())
    del model
    free_memory()
    return {"folder": str(folder), "parameters": parameters, "dtype": str(dtype).replace("torch.", ""),
            "vocab_size": vocab, "tokenizer_build_s": round(tokenizer_s, 2),
            # config.json: what the estimator reads, kept so estimates can be recomputed later
            "config": json.loads((folder / "config.json").read_text(encoding="utf-8"))}


def build_vl_model(tiny: bool) -> dict[str, Any]:
    """The studio's own tiny Qwen2.5-VL built-in (real tokenizer; ``--tiny``: the 2k-vocab one)."""
    from studio.models import TINY_QWEN_VL, TINY_QWEN_VL_SMALLVOCAB, inspect, prepare

    ref = TINY_QWEN_VL_SMALLVOCAB if tiny else TINY_QWEN_VL
    folder = prepare(ref)
    info = inspect(ref)
    return {"ref": ref, "folder": str(folder), "parameters": info.num_parameters, "config": info.config}


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# -- data -----------------------------------------------------------------------------------------------
def write_text_rows(path: Path, rows: int, cutoff_len: int) -> Path:
    """Canonical chat rows, each a multi-turn conversation of short Q/A pairs (~27 tokens a pair with
    the Qwen template) a little longer than ``cutoff_len``: every row is cut to exactly
    ``cutoff_len`` tokens, so each batch has the shape the estimator assumes (batch x cut-off)."""
    from tests.sample_data import alpaca_rows

    pairs = alpaca_rows()
    per_row = cutoff_len // 24 + 2
    with path.open("w", encoding="utf-8") as fh:
        for i in range(rows):
            messages = []
            for j in range(per_row):
                qa = pairs[(i * per_row + j) % len(pairs)]
                prompt = qa["instruction"] + (f"\n{qa['input']}" if qa["input"] else "")
                messages += [{"role": "user", "content": [{"type": "text", "text": prompt}]},
                             {"role": "assistant", "content": [{"type": "text", "text": qa["output"]}]}]
            fh.write(json.dumps({"messages": messages}) + "\n")
    return path


def write_vl_rows(folder: Path, rows: int) -> Path:
    """Canonical rows with one Pillow-drawn image each (paths relative to the JSONL's folder)."""
    from tests.sample_data import IMAGE_SCENES, draw_image

    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    scenes = list(IMAGE_SCENES.items())
    for name, (background, colour, shape, _, _) in scenes:
        draw_image(images / name, background, colour, shape)
    path = folder / "vl.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for i in range(rows):
            name, (_, _, _, question, answer) = scenes[i % len(scenes)]
            fh.write(json.dumps({"messages": [
                {"role": "user", "content": [{"type": "image", "image": f"images/{name}"},
                                             {"type": "text", "text": question}]},
                {"role": "assistant", "content": [{"type": "text", "text": answer}]}]}) + "\n")
    return path


# -- training -------------------------------------------------------------------------------------------
# The methods and their settings: the same rank everywhere, so the runs compare.
METHODS: dict[str, dict[str, Any]] = {
    "lora": {"name": "lora", "r": 16, "alpha": 32},
    "qlora": {"name": "qlora", "r": 16, "alpha": 32, "bits": 4},
    "adalora": {"name": "adalora", "init_r": 24, "target_r": 16, "alpha": 32},
    "dora": {"name": "lora", "r": 16, "alpha": 32, "use_dora": True},
}


def padding_free_available() -> bool:
    from studio.spec.run import TrainSettings

    return "padding_free" in TrainSettings.model_fields


def train_spec(model_folder: str, data_path: str, method: str, sizes: Sizes, precision: str,
               checkpointing: bool, padding_free: bool = False, vision: bool = False) -> dict[str, Any]:
    """The RunSpec (as a dict: it travels to a child process in ``--isolate`` mode)."""
    train = {"max_steps": sizes.steps, "batch_size": sizes.batch_size, "grad_accum": 1,
             "cutoff_len": sizes.cutoff_len, "precision": precision, "learning_rate": sizes.learning_rate,
             "lr_scheduler": "constant", "warmup_ratio": 0.0, "save_steps": 10**6, "logging_steps": 1,
             "gradient_checkpointing": checkpointing}
    if padding_free_available():  # explicit both ways: the spec's default may be either
        train["padding_free"] = padding_free
    spec: dict[str, Any] = {"name": f"gpu-check {method}", "model": model_folder, "data": {"path": data_path},
                            "method": {**METHODS[method], "targets": {"mode": "all-linear"}}, "train": train}
    if vision:
        spec["vision"] = {"min_pixels": 28 * 28 * 4, "max_pixels": 28 * 28 * 64}
    return spec


class StepClock:
    """A Reporter that keeps the recipe's per-step metric rows with the time they arrived."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.train_began: float | None = None

    def stage(self, name: str, message: str, fraction: float | None = None, **extra: Any) -> None:
        if name == "train" and self.train_began is None:
            self.train_began = time.monotonic()

    def metric(self, stage: str = "train", **fields: Any) -> None:
        if stage == "train":
            self.rows.append({**fields, "t": time.monotonic()})

    def cancelled(self) -> bool:
        return False


def train_part(config: dict[str, Any]) -> dict[str, Any]:
    """One training run through the studio's recipe, with its speed, memory and estimate.

    ``config``: spec (dict), run_dir, device, peak_flops, images_per_sample."""
    from studio.spec import RunSpec
    from studio.training.preflight import preflight_problems
    from studio.training.recipe import train

    spec = RunSpec.model_validate(config["spec"])
    problems = preflight_problems(spec)
    if problems:
        raise RuntimeError("the studio's pre-flight refused the run: " + "; ".join(str(p) for p in problems))
    on_gpu = config["device"] == "cuda"
    estimate = _estimate(spec, on_gpu, config.get("images_per_sample", 0))
    residue = _allocated_now()
    clock = StepClock()
    started = time.monotonic()
    result = train(spec, Path(config["run_dir"]), clock)
    total_s = time.monotonic() - started
    memory = _peaks(result.peak_memory_bytes)
    if on_gpu:
        _check_trained_on_gpu(memory, result.model)
    figures = {
        "spec": spec.to_dict(), "status": result.status, "steps": result.global_step,
        "adapter_dir": result.adapter_dir, "model": result.model, "rows": result.data.get("train"),
        "seconds_total": round(total_s, 2), "train_seconds": round(result.train_seconds, 3),
        "start_to_first_step_s": _round(result.seconds_to_first_step, 3),
        "first_step_s": _round(clock.rows[0]["t"] - clock.train_began, 3) if clock.rows and clock.train_began else None,
        "tokens_per_s_overall": _round(result.tokens_per_s, 1),
        **_losses(clock.rows), **_speed(clock.rows, result.model, config.get("peak_flops")),
        "memory": memory, "cuda_allocated_before_bytes": residue,
        "estimate": _estimate_vs_measured(estimate, memory, on_gpu),
        "speed_choices": getattr(result, "speed", None),  # what the recipe chose (padding-free, checkpointing)
    }
    del result
    free_memory()
    return figures


def _check_trained_on_gpu(memory: dict[str, Any], model: dict[str, Any]) -> None:
    """A run that silently trained on the CPU would look fine apart from its speed: the GPU must
    at least have held the weights (0.4 bytes a parameter covers 4-bit ones)."""
    held, needed = memory["max_memory_allocated_bytes"], 0.4 * (model.get("total_parameters") or 0)
    if held < needed:
        raise RuntimeError(f"the GPU held at most {held / 2**20:.0f} MiB during a run of a "
                           f"{model.get('total_parameters'):,}-parameter model: it did not train on the GPU")


def _round(x: float | None, digits: int) -> float | None:
    return None if x is None else round(x, digits)


def _allocated_now() -> int | None:
    import torch

    return int(torch.cuda.memory_allocated()) if torch.cuda.is_available() else None


def _losses(rows: list[dict[str, Any]]) -> dict[str, Any]:
    losses = [r["loss"] for r in rows if r.get("loss") is not None]
    finite = bool(losses) and all(math.isfinite(x) for x in losses)
    return {"losses": losses, "losses_finite": finite,
            "loss_fell": finite and len(losses) > 1 and losses[-1] < losses[0]}


def _speed(rows: list[dict[str, Any]], model: dict[str, Any], peak_flops: float | None) -> dict[str, Any]:
    """Steady tokens/s (steps after the first, which pays for warm-up) and MFU against the measured
    matmul peak: FLOPs per token = 4 x frozen + 6 x trainable parameters (forward 2N everywhere;
    backward 2N for the activations' gradients, + 2N for the weights' gradients only where trained)."""
    steady = [r["tokens_per_s"] for r in rows[1:] if r.get("tokens_per_s")]
    tokens_per_s = statistics.median(steady) if steady else None
    trainable = model.get("trainable_parameters") or 0
    frozen = (model.get("total_parameters") or 0) - trainable
    flops_per_token = 4 * frozen + 6 * trainable
    mfu = tokens_per_s * flops_per_token / peak_flops if tokens_per_s and peak_flops else None
    return {"tokens_per_s": _round(tokens_per_s, 1), "flops_per_token": flops_per_token,
            "mfu": _round(mfu, 4), "mfu_percent": _round(mfu * 100 if mfu is not None else None, 2)}


def _peaks(recipe_peak: int) -> dict[str, Any]:
    import torch

    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()  # the cache still holds the run's blocks: ~ the peak + context
        return {"max_memory_reserved_bytes": int(torch.cuda.max_memory_reserved()),
                "max_memory_allocated_bytes": int(torch.cuda.max_memory_allocated()),
                "device_used_at_end_bytes": int(total - free), "recipe_peak_bytes": recipe_peak}
    return {"peak_rss_bytes": recipe_peak, "recipe_peak_bytes": recipe_peak,
            "note": "CPU: the process's peak RSS (a high-water mark: in one process it includes earlier parts)"}


def _estimate(spec: Any, on_gpu: bool, images: int) -> dict[str, Any]:
    """The planner's figure for this spec, as the worker records it (on CPU: over the footprint so far)."""
    import psutil

    from studio import estimate as est
    from studio.planning import estimate_for_device, estimate_request, model_config

    precision = spec.train.precision
    baseline = 0 if on_gpu else psutil.Process().memory_info().rss
    out: dict[str, Any] = {"precision": precision, "baseline_rss_bytes": None if on_gpu else baseline}
    try:  # an estimate that breaks is a finding of its own; the run still trains
        out["estimated_bytes"] = estimate_for_device(spec, precision, on_gpu, baseline, images)
        if on_gpu:  # the parts, and the share PyTorch's allocator sees (not the CUDA context)
            estimate = est.estimate(estimate_request(spec, model_config(spec.model), images, precision))
            out.update(parts_bytes={k: int(v) for k, v in estimate.parts.items()},
                       allocator_bytes=int(estimate.allocator_bytes), context_bytes=int(estimate.context_bytes),
                       band=str(estimate.band) if estimate.band else None)
        out["status"] = "ok" if out["estimated_bytes"] else "failed"
        if not out["estimated_bytes"]:
            out["error"] = "the planner returned no estimate for this spec"
    except Exception as e:  # noqa: BLE001
        out.update(status="failed", error=f"{type(e).__name__}: {e}")
    return out


def _estimate_vs_measured(estimate: dict[str, Any], memory: dict[str, Any], on_gpu: bool) -> dict[str, Any]:
    """Errors in % (+ = the estimate is higher than measured), like with like. On the GPU the main
    one is the allocator's share of the estimate against ``max_memory_reserved`` (what decides an
    OOM; neither sees the CUDA context); the whole estimate is also set against the device memory in
    use when training ended (context included, as nvidia-smi counts it). On a CPU: the estimate
    against the process's peak RSS, as the worker records them."""
    out = dict(estimate)
    if on_gpu:
        out["measured_bytes"] = memory["max_memory_reserved_bytes"]
        pairs = {"error_percent": ("allocator_bytes", "max_memory_reserved_bytes"),
                 "error_vs_allocated_percent": ("allocator_bytes", "max_memory_allocated_bytes"),
                 "error_total_vs_device_used_percent": ("estimated_bytes", "device_used_at_end_bytes")}
    else:
        out["measured_bytes"] = memory["peak_rss_bytes"]
        pairs = {"error_percent": ("estimated_bytes", "peak_rss_bytes")}
    for name, (est_key, measured_key) in pairs.items():
        est_value, measured = estimate.get(est_key), memory.get(measured_key)
        if est_value and measured:
            out[name] = round((est_value / measured - 1) * 100, 1)
    return out


# -- chat -----------------------------------------------------------------------------------------------
def chat_part(model_folder: str, adapter_dir: str | None, device: str, max_new_tokens: int) -> dict[str, Any]:
    """The chat engine the worker keeps: load, then first-token latency and tokens/s, base and adapter."""
    from studio.inference.adapters import AdapterRef
    from studio.inference.engine import ChatEngine
    from studio.inference.settings import ChatSettings

    engine = ChatEngine(device=device)
    started = time.perf_counter()
    engine.ensure_base(model_folder)
    figures: dict[str, Any] = {"device": engine.device, "load_s": round(time.perf_counter() - started, 2)}
    settings = ChatSettings(temperature=0.0, max_new_tokens=max_new_tokens, repetition_penalty=1.0)
    messages = [{"role": "user", "content": [{"type": "text", "text": "Explain why the sky is blue."}]}]
    adapter = None
    if adapter_dir:
        adapter = AdapterRef(id=1, name="gpu-check lora", path=Path(adapter_dir), base_model_ref=model_folder,
                             method="lora")
    try:
        figures["cold"] = engine.generate(messages, settings).meta()  # first call: kernels, caches
        figures["base"] = engine.generate(messages, settings).meta()
        if adapter is not None:
            figures["adapter_first"] = engine.generate(messages, settings, adapter=adapter).meta()  # attaches it
            figures["adapter"] = engine.generate(messages, settings, adapter=adapter).meta()
    finally:
        engine.unload()
    figures["ttft_s"] = figures["base"]["ttft_s"]
    figures["tokens_per_s"] = figures["base"]["tokens_per_s"]
    return figures


# -- merge + verify ---------------------------------------------------------------------------------------
def merge_verify_part(base_folder: str, adapter_dir: str, out_dir: Path, device: str) -> dict[str, Any]:
    """What the export job does for a merged export: reference outputs of the adapter on the base,
    merge, save, reload from disk with plain transformers, compare (studio.export.merge/verify)."""
    from studio.export import merge, verify
    from studio.models import load_model, load_tokenizer_or_processor

    dtype = "bfloat16" if device == "cuda" else "float32"
    base, adapter, kind = Path(base_folder), Path(adapter_dir), "text"
    timings: dict[str, float] = {}
    t = time.perf_counter()
    model = merge.load_adapter_on_base(base, adapter, kind, dtype, device)
    processor = merge.save_tokenizer(base, adapter, kind, out_dir)
    probes = verify.build_probes(processor, kind)
    reference = verify.run_probes(model, probes, with_base=True)
    timings["load_and_reference_s"] = time.perf_counter() - t
    t = time.perf_counter()
    merged = merge.merge(model)
    shards = merge.save_merged(merged, out_dir, "2GB")
    timings["merge_and_save_s"] = time.perf_counter() - t
    del model, merged
    free_memory()
    t = time.perf_counter()
    reloaded = load_model(out_dir, kind, dtype=dtype, device_map=None if device == "cpu" else device)
    inputs_match = verify.same_inputs(probes, verify.build_probes(load_tokenizer_or_processor(out_dir, kind), kind))
    result = verify.compare(reference, verify.run_probes(reloaded, probes), dtype, probes)
    timings["reload_and_compare_s"] = time.perf_counter() - t
    del reloaded
    free_memory()
    if not result["passed"] or not inputs_match:
        failed = [k for k, ok in result["checks"].items() if not ok] + ([] if inputs_match else ["inputs_match"])
        raise RuntimeError(f"verification failed: {', '.join(failed)} (max |diff| {result['max_abs_diff']:.4g}, "
                           f"tolerance {result['tolerance']:.4g}, top-1 {result['top1_agreement_decisive']:.3f})")
    keep = ("dtype", "max_abs_diff", "logit_scale", "tolerance", "top1_agreement_decisive", "mean_abs_diff",
            "mean_abs_diff_to_base", "adapter_effect_max_abs", "greedy_match", "checks")
    return {**{k: result[k] for k in keep}, "inputs_match": inputs_match, "shards": shards,
            "timings_s": {k: round(v, 2) for k, v in timings.items()}}
