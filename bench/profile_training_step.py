"""Where a training step's time goes: the studio's trainer vs a plain transformers Trainer + peft.

    .venv/bin/python bench/profile_training_step.py                   # both sides, padded and padding-free
    .venv/bin/python bench/profile_training_step.py --sides studio --table 25

Same model (the prepared built-in SmolLM2), same rows (the first ``steps * batch`` of
../shared/data/alpaca_en_demo.json, tokenised by the studio), same LoRA (r 8, alpha 32, all linear,
dropout ``--dropout``), same batch and precision (the machine's native one). Each side runs
``--warmup`` steps, then ``--steps`` timed steps, the sides alternating step by step (median ms per
step printed), then one step of each under ``torch.profiler``: self CPU time grouped into parts
(LM head + loss, attention, matmuls, dropout, optimizer, other) and, with ``--table``, the top ops.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_training import write_rows  # noqa: E402


def load_rows(n: int, cutoff: int, tokenizer):
    import json
    import tempfile

    from studio.training.data import encode_text_rows

    with tempfile.TemporaryDirectory() as tmp:
        path = write_rows(Path(tmp), n)
        rows = [json.loads(line) for line in path.read_text().splitlines()]
    cols, _ = encode_text_rows(rows, tokenizer, cutoff)
    return cols


def studio_trainer(args, model_path, tokenizer, cols, out, before: bool = False):
    """The recipe's own trainer (decide_speed + load_base_model + make_trainer), as the worker builds
    it. ``before``: as it was before issue 13 (padded batches, TRL's fused LM head on CPU)."""
    from datasets import Dataset

    from studio.models import SMOLLM2, inspect
    from studio.spec import RunSpec
    from studio.training import recipe

    train = {"max_steps": 10**6, "batch_size": args.batch, "grad_accum": 1, "cutoff_len": args.seq,
             "precision": args.precision, "gradient_checkpointing": False, "save_steps": 10**6,
             "logging_steps": 10**6}
    if before:
        train["padding_free"] = False
    spec = RunSpec(model=SMOLLM2, data={"path": "/dev/null"}, train=train,
                   method={"name": "lora", "r": 8, "alpha": 32, "dropout": args.dropout,
                           "targets": {"mode": "all-linear"}})
    spec = recipe.resolve_spec(spec)
    info = inspect(SMOLLM2)
    ds = Dataset.from_dict(cols)
    spec, speed = recipe.decide_speed(spec, info, ds)
    print(f"studio{' (before)' if before else ''}: batches {speed['padding_free_why']}; attention {speed['attention']}")
    model = recipe.load_base_model(spec, info, model_path, spec.train.precision, speed["attention_implementation"])
    trainer = recipe.make_trainer(spec, info, model, tokenizer, ds, None, None, out, [])
    if before:
        trainer.trl_loss = True
    return trainer


def plain_trainer(args, model_path, tokenizer, cols, out, flat: bool):
    """transformers.Trainer + peft, SDPA, padded (DataCollatorForSeq2Seq) or padding-free (DataCollatorWithFlattening)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import (AutoModelForCausalLM, DataCollatorForSeq2Seq, DataCollatorWithFlattening, Trainer,
                              TrainingArguments)

    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.precision]
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, attn_implementation="sdpa")
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=32, lora_dropout=args.dropout, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    collator = DataCollatorWithFlattening() if flat else DataCollatorForSeq2Seq(tokenizer, padding=True)
    targs = TrainingArguments(output_dir=str(out), per_device_train_batch_size=args.batch, learning_rate=2e-4,
                              max_steps=10**6, bf16=args.precision == "bf16", use_cpu=True, report_to="none",
                              logging_steps=10**6, save_strategy="no", disable_tqdm=True, remove_unused_columns=False,
                              seed=42, data_seed=42)
    return Trainer(model=model, args=targs, train_dataset=Dataset.from_dict(cols), data_collator=collator)


PARTS = [  # (part, substrings of operator names), first match wins
    ("optimizer", ("Optimizer.", "adam", "_foreach", "clip_grad", "_amp_foreach")),
    ("attention", ("scaled_dot_product", "flash_attention", "_efficient_attention", "softmax")),
    ("loss / LM head", ("cross_entropy", "log_softmax", "nll_loss", "ChunkedLogProb", "logsumexp", "exp", "amax",
                        "gather", "masked_fill", "maximum", "_log_softmax")),
    ("matmul (frozen + LoRA)", ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear", "aten::matmul")),
    ("dropout", ("dropout", "bernoulli", "native_dropout")),
]


def part_of(name: str) -> str:
    low = name.lower()
    for part, keys in PARTS:
        if any(k.lower() in low for k in keys):
            return part
    return "other (norms, rope, act, copies, casts)"


def stepper(trainer):
    import torch

    trainer.create_optimizer_and_scheduler(num_training_steps=10**6)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop, which we drive by hand
    loader = iter(trainer.get_train_dataloader())

    def step():
        batch = next(loader)
        with trainer.accelerator.autocast():  # as Trainer.train runs the forward (accelerate wraps it)
            trainer.training_step(trainer.model, batch, num_items_in_batch=None)
        torch.nn.utils.clip_grad_norm_([p for p in trainer.model.parameters() if p.requires_grad], 1.0)
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
        trainer.model.zero_grad(set_to_none=True)
        return batch

    return step


def profile_one(step, label: str, table: int) -> dict[str, float]:
    from torch.profiler import ProfilerActivity, profile as tprofile

    with tprofile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = prof.key_averages()
    by_part: dict[str, float] = {}
    for e in events:
        by_part[part_of(e.key)] = by_part.get(part_of(e.key), 0.0) + e.self_cpu_time_total / 1000
    total = sum(by_part.values())
    print(f"\n== {label}: one profiled step, self CPU ms by part (profiler overhead included), total {total:.0f} ms")
    for part, ms in sorted(by_part.items(), key=lambda kv: -kv[1]):
        print(f"     {part:40s} {ms:8.0f}  {100 * ms / total:5.1f}%")
    if table:
        print(events.table(sort_by="self_cpu_time_total", row_limit=table))
    return by_part


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sides", nargs="+", default=["studio-before", "studio", "plain-padded", "plain-flat"],
                   help="studio-before: padded + TRL's fused LM head (the trainer before issue 13)")
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--dropout", type=float, default=0.05)
    p.add_argument("--precision", default=None, help="bf16 or fp32 (default: the machine's native precision)")
    p.add_argument("--table", type=int, default=0, help="also print the top N operators of each side")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    from machine import describe, native_cpu_precision

    print(describe())
    args.precision = args.precision or native_cpu_precision()
    import tempfile

    import torch

    torch.set_num_threads(args.threads)
    from studio.models import SMOLLM2, load_tokenizer_or_processor, prepare

    path = prepare(SMOLLM2)
    tokenizer = load_tokenizer_or_processor(path, "text")
    n = (args.warmup + args.steps + 1) * args.batch
    cols = load_rows(n, args.seq, tokenizer)
    print(f"rows {len(cols['input_ids'])}  seq {args.seq}  batch {args.batch}  precision {args.precision}  threads "
          f"{args.threads}  load {os.getloadavg()}")
    # Every side is built first, then their steps alternate (A B C, A B C, ...): on a CPU shared with
    # other work the load drifts, and alternating spreads the drift over all sides alike.
    outs, steps = [], {}
    for side in args.sides:
        outs.append(tempfile.TemporaryDirectory())
        torch.manual_seed(0)
        if side.startswith("studio"):
            trainer = studio_trainer(args, path, tokenizer, cols, Path(outs[-1].name), before=side == "studio-before")
        else:
            trainer = plain_trainer(args, path, tokenizer, cols, Path(outs[-1].name), flat=side == "plain-flat")
        steps[side] = stepper(trainer)
    times: dict[str, list[float]] = {side: [] for side in args.sides}
    tokens: dict[str, int] = {side: 0 for side in args.sides}
    for i in range(args.warmup + args.steps):
        for side in args.sides:
            t0 = time.perf_counter()
            batch = steps[side]()
            if i >= args.warmup:
                times[side].append(time.perf_counter() - t0)
                tokens[side] += int(batch["input_ids"].numel() if "attention_mask" not in batch
                                    else batch["attention_mask"].sum())
    print(f"\nms per step, median of {args.steps} alternated steps (same batches on every side), load "
          f"{os.getloadavg()[0]:.2f}")
    for side in args.sides:
        med = statistics.median(times[side]) * 1000
        print(f"  {side:14s} {med:8.0f} ms  (min {min(times[side]) * 1000:.0f})  {tokens[side] / sum(times[side]):7.1f} "
              f"tokens/s")
    for side in args.sides:
        profile_one(steps[side], side, args.table)

if __name__ == "__main__":
    main()
