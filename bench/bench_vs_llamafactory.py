"""Training throughput: Finetune Studio vs LLaMA-Factory's CLI, same model, rows, LoRA and threads.

    .venv/bin/python bench/bench_vs_llamafactory.py                      # 2 threads
    .venv/bin/python bench/bench_vs_llamafactory.py --threads 1 2 --lf-python /tmp/lfvenv/bin/python

Needs a SEPARATE venv with LLaMA-Factory (it pins its own transformers/peft/trl):
    python3.11 -m venv /tmp/lfvenv
    /tmp/lfvenv/bin/pip install torch==2.14.1 && /tmp/lfvenv/bin/pip install llamafactory==0.9.5

Spec (both sides): SmolLM2-135M-Instruct (the prepared built-in folder), LoRA r=8 alpha=32 dropout=0.05 on
all linear layers, cutoff 256, batch 4, grad accum 1, 20 steps (= the first 80 rows of
../shared/data/alpaca_en_demo.json, one pass), the CPU's native precision on both sides (bf16 with
AVX512-BF16/AMX, else fp32; the studio's ``auto``), the system prompt of SmolLM2's own chat
template, eval/saving off. Runs are sequential, never concurrent.

tokens/s, both sides: non-padding input tokens seen (Trainer ``num_input_tokens_seen`` with
``include_num_input_tokens_seen="non_padding"``) / seconds. Ours divides by the wall time of
``trainer.train()``; LLaMA-Factory's by the Trainer's ``train_runtime`` (also the span of the
training loop; it leaves out the adapter save that follows). Loading, tokenising and saving are
outside both figures.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, native_cpu_precision  # noqa: E402  (bench/machine.py)

ROOT = Path(__file__).resolve().parents[1]
ALPACA = ROOT.parent / "shared" / "data" / "alpaca_en_demo.json"
CACHE = os.environ.get("FTS_MODEL_CACHE", "/root/.cache/fts-models")
MODEL_DIR = Path(CACHE) / "smollm2-135m-instruct-v1"
# SmolLM2's chat template inserts this system turn (no final full stop; LLaMA-Factory's "smollm2" template has one)
SMOL_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

LF_YAML = """\
model_name_or_path: {model}
trust_remote_code: false
stage: sft
do_train: true
finetuning_type: lora
lora_rank: {rank}
lora_alpha: 32
lora_dropout: 0.05
lora_target: all
dataset: alpaca_en_demo
dataset_dir: {dataset_dir}
template: smollm2
default_system: "{system}"
cutoff_len: {seq}
max_samples: {rows}
overwrite_cache: true
preprocessing_num_workers: 1
dataloader_num_workers: 0
output_dir: {out}
logging_steps: 1
save_strategy: "no"
plot_loss: false
overwrite_output_dir: true
report_to: none
per_device_train_batch_size: {batch}
gradient_accumulation_steps: 1
learning_rate: 2.0e-4
max_steps: {steps}
lr_scheduler_type: cosine
warmup_ratio: 0.03
bf16: {bf16}
use_cpu: true
seed: 42
include_num_input_tokens_seen: non_padding
disable_tqdm: true
"""


def thread_env(threads: int) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), FTS_TORCH_THREADS=str(threads),
               FTS_MODEL_CACHE=CACHE, CUDA_VISIBLE_DEVICES="", TOKENIZERS_PARALLELISM="false")
    return env


def run_ours(args, threads: int) -> dict:
    cmd = [str(ROOT / ".venv/bin/python"), str(ROOT / "bench/bench_training.py"), "--threads", str(threads),
           "--rank", str(args.rank), "--seq", str(args.seq), "--batch", str(args.batch), "--steps", str(args.steps),
           "--precision", "auto"]
    t0 = time.monotonic()
    out = subprocess.run(cmd, env=thread_env(threads), capture_output=True, text=True, cwd=ROOT)
    wall = time.monotonic() - t0
    if out.returncode:
        sys.exit(f"ours failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    text = out.stdout
    tps = float(re.search(r"tokens/s\s+([\d.]+)", text).group(1))
    secs = float(re.search(r"training \(\d+ steps\)\s+([\d.]+) s", text).group(1))
    return {"tokens_per_s": tps, "train_s": secs, "tokens": round(tps * secs), "wall_s": wall, "log": text}


def run_lf(args, threads: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-lf-"))
    (tmp / "dataset_info.json").write_text(json.dumps({"alpaca_en_demo": {"file_name": str(ALPACA)}}))
    out_dir = tmp / "out"
    cfg = tmp / "config.yaml"
    cfg.write_text(LF_YAML.format(model=MODEL_DIR, rank=args.rank, dataset_dir=tmp, system=SMOL_SYSTEM, seq=args.seq,
                                  rows=args.steps * args.batch, out=out_dir, batch=args.batch, steps=args.steps,
                                  bf16=str(native_cpu_precision() == "bf16").lower()))
    cli = Path(args.lf_python).parent / "llamafactory-cli"
    # torch threads: OMP_NUM_THREADS sets torch's intra-op pool at import; LF has no thread option of its own
    t0 = time.monotonic()
    out = subprocess.run([str(cli), "train", str(cfg)], env=thread_env(threads), capture_output=True, text=True,
                         cwd=tmp)
    wall = time.monotonic() - t0
    (tmp / "lf.log").write_text(out.stdout + "\n" + out.stderr)
    if out.returncode:
        sys.exit(f"LLaMA-Factory failed (log {tmp / 'lf.log'}):\n{out.stderr[-4000:]}")
    res = json.loads((out_dir / "train_results.json").read_text())
    state = json.loads((out_dir / "trainer_state.json").read_text())
    tokens = state.get("num_input_tokens_seen") or res.get("num_input_tokens_seen")
    runtime = float(res["train_runtime"])
    return {"tokens_per_s": tokens / runtime, "train_s": runtime, "tokens": tokens, "wall_s": wall,
            "steps": state.get("global_step"), "reported": res, "dir": str(tmp)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=[2])
    p.add_argument("--lf-python", default="/tmp/lfvenv/bin/python")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=1, help="alternating runs per side; the best is kept")
    args = p.parse_args()
    print(describe())
    print(f"precision: {native_cpu_precision()} on both sides; load before: {os.getloadavg()}")
    rows = []
    for threads in args.threads:
        ours, lf = [], []
        for _ in range(args.repeats):
            ours.append(run_ours(args, threads))
            print(f"[{threads} thr] ours  {ours[-1]['tokens_per_s']:7.1f} tok/s  {ours[-1]['tokens']} tokens in "
                  f"{ours[-1]['train_s']:.2f} s (wall {ours[-1]['wall_s']:.0f} s)  load {os.getloadavg()[0]:.2f}",
                  flush=True)
            lf.append(run_lf(args, threads))
            print(f"[{threads} thr] LLaMA-Factory {lf[-1]['tokens_per_s']:7.1f} tok/s  {lf[-1]['tokens']} tokens in "
                  f"{lf[-1]['train_s']:.2f} s, {lf[-1]['steps']} steps (wall {lf[-1]['wall_s']:.0f} s; "
                  f"reported {lf[-1]['reported']})  load {os.getloadavg()[0]:.2f}", flush=True)
        o = max(ours, key=lambda r: r["tokens_per_s"])
        f = max(lf, key=lambda r: r["tokens_per_s"])
        rows.append((threads, o, f))
    print("\nthreads  ours tok/s  LF tok/s  ratio ours/LF  ours tokens  LF tokens  ours train s  LF train s")
    for threads, o, f in rows:
        print(f"{threads:7d}  {o['tokens_per_s']:10.1f}  {f['tokens_per_s']:8.1f}  {o['tokens_per_s'] / f['tokens_per_s']:13.2f}"
              f"  {o['tokens']:11d}  {f['tokens']:9d}  {o['train_s']:12.2f}  {f['train_s']:10.2f}")


if __name__ == "__main__":
    main()
