"""The training recipe: a RunSpec in, a PEFT adapter out. Reads top to bottom.

    1. resolve the spec (learning rate, precision) and write it beside the run
    2. prepare the model files and load the tokenizer / processor
    3. read the rows and tokenise them (assistant-only labels, cut-off, images checked); decide
       padding-free batches and gradient checkpointing (``auto``: from the memory estimate)
    4. load the base model (quantized for QLoRA) and build the method's peft config
    5. build the TRL SFTTrainer with our callbacks (metrics, cancel, checkpoints, AdaLoRA)
    6. train, resuming from the newest complete checkpoint if there is one
    7. evaluate, save the adapter atomically, write metrics.json

Nothing here knows about jobs or the database rows: progress goes to a ``Reporter``. The job
(``studio.training.job``) and the benchmark call ``train``.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from storage.workspace import atomic_write_text as write_text_atomic  # noqa: F401  (distributed.py uses it too)
from studio.methods import get_method
from studio.threads import configured_threads, torch_threads
from studio.training.compat import checkpointing_args
from studio.training import checkpoints
from studio.training.device import peak_memory_bytes, reset_peak_memory, resolve_precision, torch_dtype
from studio.training.reporting import Reporter
from studio.spec import RunSpec, plan_total_steps

log = logging.getLogger("studio.training")

CHECKPOINTS, ADAPTER, SPEC_FILE, METRICS_FILE = "checkpoints", "adapter", "spec.yaml", "metrics.json"


@dataclass
class TrainResult:
    status: str  # "completed" | "cancelled"
    run_dir: str
    adapter_dir: str | None
    global_step: int
    total_steps: int
    resumed_from_step: int
    final_loss: float | None
    final_eval_loss: float | None
    first_loss: float | None
    peak_memory_bytes: int
    seconds_to_first_step: float | None
    train_seconds: float
    tokens_per_s: float | None
    data: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    # how the run was made fast, and why: padding_free, gradient_checkpointing (what auto chose), attention, loss
    speed: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def thread_limit():
    """``FTS_TORCH_THREADS`` caps PyTorch's CPU threads while training (``studio.threads``)."""
    return torch_threads(configured_threads())


# -- 1. the resolved spec -------------------------------------------------------------------------------
def resolve_spec(spec: RunSpec) -> RunSpec:
    """Every "auto"/default filled in with what this run really uses; written as spec.yaml."""
    train = spec.train.model_copy(update={"learning_rate": spec.learning_rate(),
                                          "precision": resolve_precision(spec.train.precision)})
    return spec.model_copy(update={"train": train})


# -- 2-3. model files and data ----------------------------------------------------------------------------
def prepare_model_files(spec: RunSpec, reporter: Reporter) -> tuple[Any, Path]:
    from studio.models import inspect, prepare

    info = inspect(spec.model, trust_remote_code=spec.trust_remote_code)
    reporter.stage("prepare", f"preparing {info.display_name}", fraction=0.0)
    path = prepare(spec.model, trust_remote_code=spec.trust_remote_code,
                   progress=lambda f, m: reporter.stage("prepare", m, fraction=f))
    return info, path


def build_datasets(spec: RunSpec, info: Any, processing: Any, db: Any, reporter: Reporter):
    """(train dataset, eval dataset or None, data collator or None, stats dict)."""
    from datasets import Dataset

    from studio.training.data import VisionCollator, VisionEncoder, encode_text_rows, read_rows

    reporter.stage("tokenize", "reading and tokenising the dataset", fraction=0.0)
    rows = read_rows(spec.data, db, spec.train.seed)
    total = max(1, len(rows.train) + len(rows.eval))

    def progress(offset: int):
        return lambda done: reporter.stage("tokenize", f"tokenising: {offset + done}/{total} rows",
                                           fraction=(offset + done) / total)

    cutoff = spec.train.cutoff_len
    if info.kind == "vision-language":
        encoder = VisionEncoder(processing, spec.vision, cutoff)
        encode, collator = encoder.prepare, VisionCollator(encoder)  # pixels are made batch by batch
    else:
        encode = functools.partial(encode_text_rows, tokenizer=processing, cutoff=cutoff)
        collator = None  # TRL's padding collator; the labels are ready-made
    train_cols, train_stats = encode(rows.train, progress=progress(0))
    eval_cols, eval_stats = encode(rows.eval, progress=progress(len(rows.train))) if rows.eval else (None, None)
    if train_stats.kept == 0:
        raise ValueError(f"no training row fits: {'; '.join(train_stats.examples) or 'the dataset is empty'}")
    stats = {"train": train_stats.to_dict(), "eval": eval_stats.to_dict() if eval_stats else None,
             "eval_source": rows.eval_source}
    reporter.stage("tokenize", f"{train_stats.kept} training rows ready ({train_stats.truncated} cut at {cutoff} "
                   f"tokens, {train_stats.rows - train_stats.kept} dropped)", fraction=1.0)
    train_ds = Dataset.from_dict(train_cols)
    eval_ds = Dataset.from_dict(eval_cols) if eval_cols and eval_stats.kept else None
    return train_ds, eval_ds, collator, stats


def decide_speed(spec: RunSpec, info: Any, train_ds: Any) -> tuple[RunSpec, dict[str, Any]]:
    """Padding-free batches (text models) and gradient checkpointing (``auto``: off when the run fits
    the device's memory with margin without it), decided here on the machine that trains. Returns
    the spec with the choice filled in, and what was chosen and why (for the log and the result)."""
    from studio.planning import (choose_gradient_checkpointing, cpu_capacity_bytes, gpu_total_bytes,
                                 images_per_sample, padding_free_applies, token_lengths)
    from studio.training.device import has_cuda

    on_gpu = has_cuda()
    padding_free, padding_why = padding_free_applies(spec, info.config)
    vision = "images" in train_ds.column_names
    images = images_per_sample(sum(len(i) for i in train_ds["images"]), len(train_ds)) if vision else 0
    lengths = None if vision else token_lengths([len(ids) for ids in train_ds["input_ids"]])
    choice = choose_gradient_checkpointing(spec, gpu_total_bytes() if on_gpu else cpu_capacity_bytes(), on_gpu,
                                           info.config, data=lengths, precision=spec.train.precision, images=images)
    from studio.training import attention as rows_attention

    attention = None
    if padding_free and not spec.train.packing:  # packing: the pre-flight has asked for flash-attn already
        # FlashAttention's varlen kernels where installed; else SDPA once per row (studio.training.attention)
        attention = "flash_attention_2" if on_gpu and flash_attention_available() else rows_attention.NAME
    train = spec.train.model_copy(update={"gradient_checkpointing": choice.enabled, "padding_free": padding_free})
    speed = {"padding_free": padding_free, "padding_free_why": padding_why,
             "gradient_checkpointing": choice.enabled, "gradient_checkpointing_why": choice.reason,
             "gradient_checkpointing_requested": choice.requested,
             "gradient_checkpointing_estimate": choice.to_dict(),
             "attention": attention or ("flash_attention_2" if spec.train.packing else "sdpa (the model's default)"),
             "attention_implementation": attention,
             "loss": "TRL fused LM head" if on_gpu else "logits at labelled positions only + cross-entropy"}
    return spec.model_copy(update={"train": train}), speed


def flash_attention_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("flash_attn") is not None


# -- 4. model -----------------------------------------------------------------------------------------
def load_base_model(spec: RunSpec, info: Any, path: Path, precision: str, attention: str | None = None) -> Any:
    """``attention``: an implementation to switch to, for padding-free batches: flash_attention_2
    (varlen kernels) on a GPU with flash-attn, else ``sdpa_rows`` (SDPA once per row)."""
    from studio.models import load_model
    from studio.training import attention as rows_attention

    method = get_method(spec.method.name)
    model = load_model(path, info.kind, dtype=torch_dtype(precision),
                       quantization_config=method.quantization_config(spec, info),
                       trust_remote_code=spec.trust_remote_code)
    model.config.use_cache = False  # the KV cache is useless in training and clashes with checkpointing
    if attention == rows_attention.NAME:
        rows_attention.register()
    if attention or spec.train.packing:  # packing is checked before queueing: a GPU with flash-attn
        model.set_attn_implementation(attention or "flash_attention_2")
    return method.prepare_model(model, spec)


# -- 5. trainer -----------------------------------------------------------------------------------------
def trainer_args(spec: RunSpec, output_dir: Path, has_eval: bool, checkpointing: bool) -> dict[str, Any]:
    """The Trainer arguments every stage shares (SFT here, DPO/KTO/reward in ``preference``)."""
    from studio.training.device import has_cuda

    t = spec.train
    return dict(
        output_dir=str(output_dir),
        num_train_epochs=t.epochs, max_steps=t.max_steps or -1,
        per_device_train_batch_size=t.batch_size, per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate, lr_scheduler_type=t.lr_scheduler, warmup_steps=t.warmup_ratio,  # <1: a ratio
        lr_scheduler_kwargs={"min_lr_rate": 0.1} if t.lr_scheduler == "cosine_with_min_lr" else None,
        weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm,
        bf16=t.precision == "bf16", fp16=t.precision == "fp16", use_cpu=not has_cuda(),
        # non-reentrant: reentrant needs inputs that require grads
        **checkpointing_args(checkpointing, {"use_reentrant": False}),
        seed=t.seed, data_seed=t.seed,
        logging_steps=t.logging_steps, logging_first_step=True,
        eval_strategy="steps" if has_eval and t.eval_steps else "no", eval_steps=t.eval_steps,
        save_strategy="steps", save_steps=t.save_steps,
        save_total_limit=None,  # rotation is ours: it must never delete the last *complete* checkpoint
        remove_unused_columns=False,  # the VL collator needs its own columns
        dataloader_num_workers=0,
        report_to="none", disable_tqdm=True,
        # CPU processes talk over gloo (torchrun sets WORLD_SIZE; a single process must not ask for it)
        ddp_backend="gloo" if not has_cuda() and int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
    )


def sft_config(spec: RunSpec, output_dir: Path, has_eval: bool) -> Any:
    from trl import SFTConfig

    t = spec.train
    padding_free = bool(t.padding_free or t.packing)  # decide_speed has turned it off where it cannot apply
    return SFTConfig(
        **trainer_args(spec, output_dir, has_eval, bool(t.gradient_checkpointing)),  # "auto" was decided before
        # rows are cut at the cut-off when tokenised; TRL refuses max_length with padding-free batches
        max_length=None if padding_free and not t.packing else t.cutoff_len,
        packing=t.packing, packing_strategy="bfd", padding_free=padding_free,
        # a padding-free batch has no padding (and no attention mask to count it by): count every token
        include_num_input_tokens_seen="all" if padding_free else "non_padding",
        ddp_find_unused_parameters=False if spec.vision.vision_tower == "frozen" else None,
    )


def make_trainer(spec: RunSpec, info: Any, model: Any, processing: Any, train_ds: Any, eval_ds: Any,
                 collator: Any, output_dir: Path, callbacks: list[Any]) -> Any:
    from transformers.trainer_callback import PrinterCallback

    from studio.training.trainer import StudioSFTTrainer

    method = get_method(spec.method.name)
    total_steps = plan_total_steps(len(train_ds), spec.train)
    trainer = StudioSFTTrainer(
        model=model, args=sft_config(spec, output_dir, eval_ds is not None),
        train_dataset=train_ds, eval_dataset=eval_ds, processing_class=processing, data_collator=collator,
        peft_config=method.build_peft_config(spec, info, total_steps),
        callbacks=[*callbacks, *method.callbacks(spec)],
    )
    trainer.method, trainer.spec = method, spec  # the method's loss term and checkpoint state hooks
    trainer.remove_callback(PrinterCallback)  # raw log dicts on stdout: our reporter says it in words
    return trainer


def model_summary(peft_model: Any) -> dict[str, Any]:
    """What was trained: parameter counts and how the base weights were held."""
    trainable, total = peft_model.get_nb_trainable_parameters()
    base = peft_model.get_base_model()
    quantization = "4-bit" if getattr(base, "is_loaded_in_4bit", False) else \
        "8-bit" if getattr(base, "is_loaded_in_8bit", False) else None
    return {"trainable_parameters": int(trainable), "total_parameters": int(total),
            "trainable_percent": round(100 * trainable / max(total, 1), 4), "quantization": quantization,
            "dtype": str(next(p for p in base.parameters() if p.is_floating_point()).dtype).replace("torch.", "")}


# -- 7. outputs -----------------------------------------------------------------------------------------
def save_adapter(spec: RunSpec, model: Any, folder: Path, run_dir: Path) -> None:
    """The method's own saving (PiSSA/OLoRA convert to a plain LoRA), else peft's."""
    custom = get_method(spec.method.name).save_adapter
    if custom is not None:
        custom(model, folder, run_dir)
    else:
        model.save_pretrained(folder)


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Build a folder beside ``final`` and rename it into place only when complete."""
    stage = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.partial")
    stage.mkdir(parents=True)
    try:
        yield stage
        if final.exists():
            shutil.rmtree(final)  # an adapter from an earlier attempt of this same run
        os.replace(stage, final)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _last(history: list[dict[str, Any]], key: str) -> float | None:
    values = [h[key] for h in history if key in h]
    return float(values[-1]) if values else None


def _first(history: list[dict[str, Any]], key: str) -> float | None:
    values = [h[key] for h in history if key in h]
    return float(values[0]) if values else None


# -- the recipe ---------------------------------------------------------------------------------------------
def train(spec: RunSpec, run_dir: Path, reporter: Reporter, db: Any = None, is_main: bool = True) -> TrainResult:
    """Train ``spec`` into ``run_dir``; ``is_main`` is False on the other ranks of a multi-process run."""
    with thread_limit():
        if spec.stage.name != "sft":  # dpo, kto, reward: TRL's preference trainers
            from studio.training import preference

            return preference.train(spec, run_dir, reporter, db, is_main)
        return _train(spec, run_dir, reporter, db, is_main)


def _train(spec: RunSpec, run_dir: Path, reporter: Reporter, db: Any, is_main: bool) -> TrainResult:
    from studio.models import load_tokenizer_or_processor
    from studio.training.callbacks import FirstStepTimer, ProgressCallback

    t_start = time.monotonic()
    reset_peak_memory()
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = run_dir / CHECKPOINTS
    if is_main:
        for leftover in run_dir.glob(".*.partial"):  # an adapter half-saved by a killed attempt
            shutil.rmtree(leftover, ignore_errors=True)

    # 1. resolved spec
    spec = resolve_spec(spec)
    if is_main:
        write_text_atomic(run_dir / SPEC_FILE, spec.to_yaml())

    # 2. model files + tokenizer/processor
    info, path = prepare_model_files(spec, reporter)
    processing = load_tokenizer_or_processor(path, info.kind, trust_remote_code=spec.trust_remote_code)

    # 3. data
    train_ds, eval_ds, collator, data_stats = build_datasets(spec, info, processing, db, reporter)
    spec, speed = decide_speed(spec, info, train_ds)
    reporter.stage("tokenize", f"batches: {speed['padding_free_why']}; gradient checkpointing "
                   f"{speed['gradient_checkpointing_why']}", fraction=1.0)
    if is_main:
        write_text_atomic(run_dir / SPEC_FILE, spec.to_yaml())  # with what auto chose

    # 4. base model
    reporter.stage("load", "loading the model weights", fraction=0.0)
    model = load_base_model(spec, info, path, spec.train.precision, speed["attention_implementation"])

    # 5. trainer
    resume = checkpoints.latest_complete(ckpt_dir)
    if is_main:
        checkpoints.remove_incomplete(ckpt_dir)
    progress = ProgressCallback(reporter, ckpt_dir, spec.train.save_total_limit)
    first_step = FirstStepTimer(t_start)
    trainer = make_trainer(spec, info, model, processing, train_ds, eval_ds, collator, ckpt_dir, [progress, first_step])
    reporter.stage("load", "model ready", fraction=1.0)

    # 6. train
    t_train = time.monotonic()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    train_seconds = time.monotonic() - t_train
    state = trainer.state
    resumed_from = checkpoints.step_of(resume) if resume else 0
    history = list(state.log_history)
    tokens = (state.num_input_tokens_seen or 0) - progress.tokens_at_start  # this session's, not a resumed run's
    tokens_per_s = tokens / train_seconds if train_seconds > 0 else None

    result = TrainResult(
        status="cancelled" if progress.cancelled else "completed", run_dir=str(run_dir), adapter_dir=None,
        global_step=state.global_step, total_steps=state.max_steps, resumed_from_step=resumed_from,
        final_loss=_last(history, "loss"), final_eval_loss=None, first_loss=_first(history, "loss"),
        peak_memory_bytes=peak_memory_bytes(), seconds_to_first_step=first_step.seconds,
        train_seconds=train_seconds, tokens_per_s=tokens_per_s, data=data_stats, model=model_summary(trainer.model),
        speed=speed)
    if progress.cancelled:
        return result

    # 7. evaluate, save
    if eval_ds is not None:
        done_at_last_step = [h["eval_loss"] for h in history if "eval_loss" in h and h.get("step") == state.global_step]
        if done_at_last_step:  # eval_steps divided the run: the last step was just evaluated
            result.final_eval_loss = done_at_last_step[-1]
        else:
            reporter.stage("save", "evaluating", fraction=0.0)
            result.final_eval_loss = trainer.evaluate().get("eval_loss")
    if is_main:
        save_outputs(run_dir, result, history, reporter, lambda stage: save_adapter(spec, trainer.model, stage, run_dir))
    return result


def save_outputs(run_dir: Path, result: "TrainResult", history: list, reporter: Reporter, save: Any) -> None:
    """The adapter (``save(folder)`` into a folder renamed into place when complete) and metrics.json:
    the last step of every stage's recipe."""
    reporter.stage("save", "saving the adapter", fraction=0.5)
    with atomic_dir(run_dir / ADAPTER) as stage:
        save(stage)
    result.adapter_dir = str(run_dir / ADAPTER)
    result.peak_memory_bytes = peak_memory_bytes()
    write_text_atomic(run_dir / METRICS_FILE, json.dumps({"summary": result.to_dict(), "log_history": history},
                                                         indent=2, default=str))
    reporter.stage("save", "adapter saved", fraction=1.0)

