"""The plain reference for bench_vs_llamafactory.py: transformers ``Trainer`` + peft, nothing else.

    .venv/bin/python bench/reference_trainer.py --json out.json [--padded] [--checkpointing]

The same rows as the studio (the first ``steps * batch`` of alpaca_en_demo, tokenised by the
studio's ``encode_text_rows``: the same chat template, assistant-only labels and cut-off), the same
LoRA (r, alpha, dropout, all linear layers), learning rate 2e-4, cosine, warmup 0.03, seed 42, the
machine's native precision, SDPA. Batches: padding-free (``DataCollatorWithFlattening``, position
ids restarting per row) or padded (``--padded``, ``DataCollatorForSeq2Seq``). The model computes
its own loss (full logits + cross-entropy). Writes tokens, seconds, losses and peak RSS as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", required=True)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=int, default=32)
    p.add_argument("--dropout", type=float, default=0.05)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--padded", action="store_true")
    p.add_argument("--checkpointing", action="store_true")
    p.add_argument("--threads", type=int)
    p.add_argument("--json", required=True)
    args = p.parse_args()
    started = time.monotonic()

    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, DataCollatorWithFlattening,
                              Trainer, TrainerCallback, TrainingArguments)

    from bench_training import write_rows
    from studio.training.data import encode_text_rows

    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_rows(Path(tmp), args.steps * args.batch)
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    cols, _ = encode_text_rows(rows, tokenizer, args.seq)
    tokens = sum(len(ids) for ids in cols["input_ids"])

    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=dtype, attn_implementation="sdpa")
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=args.dropout,
                                             target_modules="all-linear", task_type="CAUSAL_LM"))
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True) if args.padded else DataCollatorWithFlattening()

    class FirstStep(TrainerCallback):
        seconds = None

        def on_step_end(self, *a, **k):
            if FirstStep.seconds is None:
                FirstStep.seconds = time.monotonic() - started

    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(
            output_dir=out, per_device_train_batch_size=args.batch, gradient_accumulation_steps=1, max_steps=args.steps,
            learning_rate=2e-4, lr_scheduler_type="cosine", warmup_steps=0.03, weight_decay=0.0, max_grad_norm=1.0,
            bf16=args.precision == "bf16", use_cpu=True, seed=42, data_seed=42, logging_steps=1, save_strategy="no",
            report_to="none", disable_tqdm=True, remove_unused_columns=False, dataloader_num_workers=0,
            gradient_checkpointing=args.checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False} if args.checkpointing else None)
        trainer = Trainer(model=model, args=targs, train_dataset=Dataset.from_dict(cols), data_collator=collator,
                          callbacks=[FirstStep()])
        t0 = time.monotonic()
        result = trainer.train()
        train_s = time.monotonic() - t0
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    Path(args.json).write_text(json.dumps({
        "tokens": tokens, "train_seconds": train_s, "tokens_per_s": tokens / train_s,
        "train_loss": result.training_loss, "final_loss": losses[-1] if losses else None,
        "first_loss": losses[0] if losses else None, "steps": trainer.state.global_step,
        "seconds_to_first_step": FirstStep.seconds,
        "peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


if __name__ == "__main__":
    main()
