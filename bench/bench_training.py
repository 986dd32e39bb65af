"""Training speed on the built-in SmolLM2: tokens/s, peak memory, and the wait before step 1.

    .venv/bin/python bench/bench_training.py                       # LoRA r=8 all-linear, seq 256, batch 4, 20 steps
    .venv/bin/python bench/bench_training.py --method qlora --precision fp32 --threads 1

Runs the same recipe the worker runs (``studio.training.recipe.train``) without the database, on
the first rows of ../shared/data/alpaca_en_demo.json written as canonical JSONL. Reports:
- tokens/s: non-padding tokens through forward+backward per second of training (all steps);
- peak memory: peak RSS of this process on CPU (PyTorch's peak reserved on GPU);
- start to first step: from calling ``train`` (model files, tokenising, loading) to the end of
  optimizer step 1: how long a user waits for the first loss.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402  (bench/machine.py)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ALPACA = ROOT.parent / "shared" / "data" / "alpaca_en_demo.json"


def write_rows(folder: Path, n: int) -> Path:
    rows = json.loads(ALPACA.read_text(encoding="utf-8"))[:n]
    path = folder / "train.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for r in rows:
            prompt = r["instruction"] + (f"\n{r['input']}" if r["input"] else "")
            fh.write(json.dumps({"messages": [
                {"role": "user", "content": [{"type": "text", "text": prompt}]},
                {"role": "assistant", "content": [{"type": "text", "text": r["output"]}]}]}) + "\n")
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="builtin:smollm2-135m-instruct")
    p.add_argument("--method", default="lora", choices=["lora", "qlora", "adalora"])
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32", "fp16"])
    p.add_argument("--checkpointing", default="auto", choices=["auto", "on", "off"],
                   help="gradient checkpointing (default: the spec's default, auto)")
    p.add_argument("--padding-free", default="default", choices=["default", "on", "off"],
                   help="padding-free batches (default: the spec's default)")
    p.add_argument("--dropout", type=float, default=None, help="LoRA dropout (default: the method's default)")
    p.add_argument("--json", help="also write the result (and the run's mean training loss) to this file")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")
    args = p.parse_args()
    if args.threads:
        os.environ["FTS_TORCH_THREADS"] = str(args.threads)

    from studio.training.recipe import train
    from studio.training.reporting import NullReporter
    from studio.spec import RunSpec

    method = {"name": args.method, "targets": {"mode": "all-linear"}}
    method.update({"init_r": args.rank * 3 // 2, "target_r": args.rank} if args.method == "adalora" else {"r": args.rank})
    if args.dropout is not None:
        method["dropout"] = args.dropout
    settings = {"max_steps": args.steps, "batch_size": args.batch, "grad_accum": 1, "cutoff_len": args.seq,
                "precision": args.precision, "save_steps": 10**6, "logging_steps": 1}
    if args.checkpointing != "auto":
        settings["gradient_checkpointing"] = args.checkpointing == "on"
    if args.padding_free != "default":
        settings["padding_free"] = args.padding_free == "on"
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        rows = write_rows(Path(tmp), args.steps * args.batch)
        spec = RunSpec(model=args.model, data={"path": str(rows)}, method=method, train=settings)
        started = time.monotonic()
        result = train(spec, Path(tmp) / "run", NullReporter())
        total = time.monotonic() - started
        history = json.loads((Path(tmp) / "run" / "metrics.json").read_text())["log_history"]
    train_loss = next((h["train_loss"] for h in history if "train_loss" in h), None)
    import torch

    from studio.training.device import resolve_precision

    print(describe())
    print(f"model {args.model}  method {args.method} r={args.rank} all-linear  seq {args.seq}  batch {args.batch}  "
          f"steps {result.global_step}  precision {resolve_precision(args.precision)}  "
          f"threads {os.environ.get('FTS_TORCH_THREADS') or torch.get_num_threads()}")
    print(f"tokens/s               {result.tokens_per_s:8.1f}")
    print(f"peak memory            {result.peak_memory_bytes / 2**20:8.0f} MiB")
    print(f"start to first step    {result.seconds_to_first_step:8.2f} s")
    print(f"training ({result.global_step} steps)   {result.train_seconds:8.2f} s   (whole run {total:.1f} s)")
    print(f"loss                   {result.first_loss:.4f} -> {result.final_loss:.4f}  (mean over the run "
          f"{train_loss:.4f})")
    print(f"batches                {result.speed['padding_free_why']}")
    print(f"gradient checkpointing {result.speed['gradient_checkpointing_why']}")
    if args.json:
        Path(args.json).write_text(json.dumps({**result.to_dict(), "train_loss": train_loss, "whole_run_s": total,
                                               "tokens": round(result.tokens_per_s * result.train_seconds)},
                                              default=str))


if __name__ == "__main__":
    main()
