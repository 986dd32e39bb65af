"""The preference recipes: dpo, kto and reward stages on TRL's trainers. Reads top to bottom like
``recipe.py``, whose model preparation, callbacks and outputs it shares.

    1. resolve the spec and write it beside the run
    2. prepare the model files and load the tokenizer
    3. read the rows: canonical pairs -> TRL's conversational preference form (prompt / chosen /
       rejected, or prompt / completion / label for KTO); TRL tokenises them
    4. load the base model (reward: with a one-output score head) and either a fresh adapter from the
       method table or the adapter the stage continues (``stage.start_from``)
    5. build the TRL trainer with our callbacks (metrics incl. reward margins/accuracies and
       chosen/rejected log-probs, cancel, checkpoints)
    6. train, resuming from the newest complete checkpoint if there is one
    7. evaluate, save the adapter atomically, write metrics.json

The reference model of DPO/KTO is never a second copy of the weights: with a fresh adapter TRL
computes the reference log-probs with the adapter disabled (the base); when continuing an adapter
it keeps a frozen copy of that adapter's (small) weights as the "ref" adapter and switches to it.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from studio.methods import get_method
from studio.spec import RunSpec, plan_total_steps
from studio.spec.stages import start_from_parts
from studio.training import checkpoints
from studio.training.device import peak_memory_bytes, reset_peak_memory
from studio.training.recipe import (CHECKPOINTS, SPEC_FILE, TrainResult, _first, _last,
                                    load_base_model, model_summary, prepare_model_files, resolve_spec,
                                    save_adapter, save_outputs, trainer_args, write_text_atomic)
from studio.training.reporting import Reporter

# -- 3. data -----------------------------------------------------------------------------------------
def trainer_rows(rows: list[dict[str, Any]], stage: str, vision: bool) -> list[dict[str, Any]]:
    """Canonical rows -> TRL examples. Text models get string contents (templates such as SmolLM2's
    concatenate ``content``); KTO takes a pair as one desirable and one undesirable completion."""
    from studio.datasets.preference import KTO, PREFERENCE, row_kind, trainer_example
    from studio.datasets.render import template_messages

    out = []
    for row in rows:
        kind = row_kind(row)
        if stage == "kto" and kind == PREFERENCE:
            prompt = {k: v for k, v in row.items() if k not in ("chosen", "rejected")}
            examples = [trainer_example({**prompt, "kind": KTO, "completion": row[b], "label": b == "chosen"})
                        for b in ("chosen", "rejected")]
        else:
            examples = [trainer_example(row)]
        for ex in examples:
            converted = {k: template_messages(v, vision) if isinstance(v, list) else v for k, v in ex.items()}
            if vision:  # TRL's vision collator hands these to the processor: decoded images
                from PIL import Image

                from studio.training.data import row_images

                converted["images"] = [Image.open(p).convert("RGB") for p in row_images(row)]
            out.append(converted)
    return out


def build_datasets(spec: RunSpec, info: Any, db: Any, reporter: Reporter) -> tuple[Any, Any, dict[str, Any]]:
    from datasets import Dataset

    from studio.training.data import read_rows

    reporter.stage("tokenize", "reading the preference rows", fraction=0.0)
    rows = read_rows(spec.data, db, spec.train.seed)
    vision = info.kind == "vision-language"
    train = trainer_rows(rows.train, spec.stage.name, vision)
    evaluation = trainer_rows(rows.eval, spec.stage.name, vision)
    if not train:
        raise ValueError("the dataset has no training rows")
    stats = {"train": {"rows": len(rows.train), "examples": len(train)},
             "eval": {"rows": len(rows.eval), "examples": len(evaluation)} if evaluation else None,
             "eval_source": rows.eval_source}
    reporter.stage("tokenize", f"{len(train)} training examples ready", fraction=1.0)
    return Dataset.from_list(train), (Dataset.from_list(evaluation) if evaluation else None), stats


def bound_image_tokens(processor: Any, vision: Any) -> None:
    """min/max pixels bound the tokens each image costs (as the SFT recipe's ``VisionEncoder`` sets them)."""
    ip = processor.image_processor
    ip.size = {"shortest_edge": vision.min_pixels, "longest_edge": vision.max_pixels}
    for attr, value in (("min_pixels", vision.min_pixels), ("max_pixels", vision.max_pixels)):
        if hasattr(ip, attr):
            setattr(ip, attr, value)


# -- 4. model ------------------------------------------------------------------------------------------
def start_adapter_dir(spec: RunSpec, db: Any) -> Path | None:
    """The folder of the adapter the stage continues (``adapter:<id>``, ``run:<id>`` or a path)."""
    ref = spec.stage.start_from
    if not ref:
        return None
    parts = start_from_parts(ref)
    if parts is None:
        return Path(ref).expanduser()
    from storage.models import Adapter

    kind, number = parts
    with db.session() as s:
        if kind == "adapter":
            adapter = s.get(Adapter, number)
        else:
            adapter = s.query(Adapter).filter(Adapter.run_id == number).order_by(Adapter.id.desc()).first()
        if adapter is None:
            raise LookupError(f"{ref}: no such adapter")
        return db.workspace.confine(adapter.path)


def load_reward_model(spec: RunSpec, info: Any, path: Path, tokenizer: Any) -> Any:
    """The base with a one-output score head (``AutoModelForSequenceClassification``): the head is
    new and trains in full beside the adapter (``modules_to_save``)."""
    from transformers import AutoModelForSequenceClassification

    from studio.training.device import torch_dtype

    method = get_method(spec.method.name)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, dtype=torch_dtype(spec.train.precision),
        quantization_config=method.quantization_config(spec, info), trust_remote_code=spec.trust_remote_code)
    model.config.pad_token_id = tokenizer.pad_token_id  # the score is read at the last non-pad token
    model.config.use_cache = False
    return method.prepare_model(model, spec)


def peft_config_for(spec: RunSpec, info: Any, total_steps: int) -> Any:
    config = get_method(spec.method.name).build_peft_config(spec, info, total_steps)
    if spec.stage.name == "reward":
        config.task_type = "SEQ_CLS"
        config.modules_to_save = list(dict.fromkeys([*(config.modules_to_save or []), "score"]))
    return config


def load_policy(spec: RunSpec, info: Any, path: Path, tokenizer: Any, db: Any) -> tuple[Any, Any]:
    """(model, peft config or None): a continued adapter is already attached and trainable."""
    if spec.stage.name == "reward":
        return load_reward_model(spec, info, path, tokenizer), "fresh"
    model = load_base_model(spec, info, path, spec.train.precision)
    start = start_adapter_dir(spec, db)
    if start is None:
        return model, "fresh"
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(start), is_trainable=True), None


# -- 5. trainer ------------------------------------------------------------------------------------------
def common_args(spec: RunSpec, output_dir: Path, has_eval: bool) -> dict[str, Any]:
    # "auto" checkpointing counts as off for the preference stages (not decided by the estimator here)
    return {**trainer_args(spec, output_dir, has_eval, spec.train.gradient_checkpointing is True),
            "max_length": spec.train.cutoff_len}


def trainer_for(spec: RunSpec, model: Any, peft_config: Any, tokenizer: Any, train_ds: Any, eval_ds: Any,
                output_dir: Path, callbacks: list[Any]) -> Any:
    from transformers.trainer_callback import PrinterCallback

    st = spec.stage
    args = common_args(spec, output_dir, eval_ds is not None)
    if st.name == "dpo":
        from trl import DPOConfig, DPOTrainer

        config, cls = DPOConfig(**args, beta=st.beta, loss_type=[st.loss_type],
                                label_smoothing=st.label_smoothing), DPOTrainer
    elif st.name == "kto":
        from trl import KTOConfig, KTOTrainer

        config, cls = KTOConfig(**args, beta=st.beta, desirable_weight=st.desirable_weight,
                                undesirable_weight=st.undesirable_weight), KTOTrainer
    else:
        from trl import RewardConfig, RewardTrainer

        config, cls = RewardConfig(**args), RewardTrainer
    trainer = cls(model=model, args=config, train_dataset=train_ds, eval_dataset=eval_ds, processing_class=tokenizer,
                  peft_config=peft_config, callbacks=[*callbacks, *get_method(spec.method.name).callbacks(spec)])
    trainer.remove_callback(PrinterCallback)
    return trainer


# -- the recipe ---------------------------------------------------------------------------------------------
def train(spec: RunSpec, run_dir: Path, reporter: Reporter, db: Any = None, is_main: bool = True) -> TrainResult:
    """Called by ``recipe.train`` for every stage but sft (inside its thread limit)."""
    from studio.models import load_tokenizer_or_processor
    from studio.training.callbacks import FirstStepTimer, ProgressCallback

    t_start = time.monotonic()
    reset_peak_memory()
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = run_dir / CHECKPOINTS

    # 1-2. resolved spec, model files, tokenizer
    spec = resolve_spec(spec)
    if spec.train.gradient_checkpointing == "auto":  # pairs are short here; the estimator decides on GPUs
        spec = spec.model_copy(update={"train": spec.train.model_copy(update={"gradient_checkpointing": False})})
    if is_main:
        write_text_atomic(run_dir / SPEC_FILE, spec.to_yaml())
    info, path = prepare_model_files(spec, reporter)
    processing = load_tokenizer_or_processor(path, info.kind, trust_remote_code=spec.trust_remote_code)
    tokenizer = getattr(processing, "tokenizer", processing)
    if info.kind == "vision-language":
        bound_image_tokens(processing, spec.vision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    # 3. data
    train_ds, eval_ds, data_stats = build_datasets(spec, info, db, reporter)

    # 4. model (+ the adapter it continues)
    reporter.stage("load", "loading the model weights", fraction=0.0)
    model, fresh = load_policy(spec, info, path, tokenizer, db)
    total_steps = plan_total_steps(len(train_ds), spec.train)
    peft_config = peft_config_for(spec, info, total_steps) if fresh else None

    # 5. trainer
    resume = checkpoints.latest_complete(ckpt_dir)
    if is_main:
        checkpoints.remove_incomplete(ckpt_dir)
    progress = ProgressCallback(reporter, ckpt_dir, spec.train.save_total_limit)
    first_step = FirstStepTimer(t_start)
    trainer = trainer_for(spec, model, peft_config, processing if info.kind == "vision-language" else tokenizer,
                          train_ds, eval_ds, ckpt_dir, [progress, first_step])
    reporter.stage("load", "model ready", fraction=1.0)

    # 6. train
    t_train = time.monotonic()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    train_seconds = time.monotonic() - t_train
    state = trainer.state
    history = list(state.log_history)
    result = TrainResult(
        status="cancelled" if progress.cancelled else "completed", run_dir=str(run_dir), adapter_dir=None,
        global_step=state.global_step, total_steps=state.max_steps,
        resumed_from_step=checkpoints.step_of(resume) if resume else 0,
        final_loss=_last(history, "loss"), final_eval_loss=None, first_loss=_first(history, "loss"),
        peak_memory_bytes=peak_memory_bytes(), seconds_to_first_step=first_step.seconds,
        train_seconds=train_seconds, tokens_per_s=None, data=data_stats, model=model_summary(trainer.model),
        speed={"stage": spec.stage.name, "reference": reference_note(spec, trainer)})
    if progress.cancelled:
        return result

    # 7. evaluate, save
    if eval_ds is not None:
        reporter.stage("save", "evaluating", fraction=0.0)
        evaluation = trainer.evaluate()
        result.final_eval_loss = evaluation.get("eval_loss")
        history.append({**evaluation, "step": state.global_step})
    if is_main:
        save_outputs(run_dir, result, history, reporter, lambda stage: save_policy(spec, trainer.model, stage, run_dir))
    return result


def save_policy(spec: RunSpec, model: Any, folder: Path, run_dir: Path) -> None:
    """The trained adapter only: never TRL's frozen "ref" copy of a continued adapter; a new one
    is saved as the method saves it (PiSSA/OLoRA become plain LoRA)."""
    peft_config = getattr(model, "peft_config", None)
    if isinstance(peft_config, dict) and "ref" in peft_config:
        model.save_pretrained(folder, selected_adapters=["default"])
    else:
        save_adapter(spec, model, folder, run_dir)


def reference_note(spec: RunSpec, trainer: Any) -> str:
    if spec.stage.name == "reward":
        return "none (a reward model is not regularised against a reference)"
    if getattr(trainer, "ref_model", None) is not None:
        return "a frozen copy of the model (the method trains the weights themselves, so there is no adapter to turn off)"
    if spec.stage.start_from:
        return f"the adapter it continues ({spec.stage.start_from}), kept frozen as TRL's 'ref' adapter"
    return "the base model with the adapter disabled (no second copy of the weights)"
