"""Training throughput: Finetune Studio vs LLaMA-Factory's CLI vs a plain transformers Trainer.

    .venv/bin/python bench/bench_vs_llamafactory.py --repeats 3             # the issue-13 setting
    .venv/bin/python bench/bench_vs_llamafactory.py --steps 10 --repeats 2 --threads 1

Needs a SEPARATE venv with LLaMA-Factory (it pins its own transformers/peft/trl); torch comes from
the local disk (../shared/PLATFORM.md):
    python3.11 -m venv /tmp/lfvenv
    /tmp/lfvenv/bin/pip install torch==2.14.1 && /tmp/lfvenv/bin/pip install llamafactory==0.9.5

Sides, run one after another and interleaved (studio, LF, LF-no-gc, ref, studio, LF, ...) ``--repeats``
times, so load drift on a shared CPU falls on every side alike; medians are reported:
- ``studio``: the worker's recipe (``bench_training.py`` -> ``studio.training.recipe.train``) with the
  studio's defaults: precision auto, gradient checkpointing auto, padding-free batches.
- ``LF``: ``llamafactory-cli train`` with LLaMA-Factory's defaults (gradient checkpointing on,
  padded batches, its own chat template "smollm2" with SmolLM2's system prompt).
- ``LF-no-gc``: the same with ``disable_gradient_checkpointing: true``.
- ``ref``: ``reference_trainer.py``, a plain transformers ``Trainer`` + peft, SDPA, padding-free via
  ``DataCollatorWithFlattening``, checkpointing off: the overhead of our own loop is the gap to it.
Same on every side: SmolLM2-135M-Instruct (the prepared built-in folder), the first ``steps * batch``
rows of ../shared/data/alpaca_en_demo.json (one pass), cut-off, batch, grad accum 1, LoRA r/alpha/
dropout on all linear layers, lr 2e-4 cosine warmup 0.03, seed 42, the machine's native precision
(``bench/machine.py``), the same torch threads, eval and saving off.

Figures per side: tokens/s = tokens of the rows trained (each side counts its own: Trainer's
``num_input_tokens_seen``, non-padding) / seconds of the training loop (loading, tokenising and
saving are outside); the mean training loss of the run (Trainer's ``train_loss``; the rows are the
same, so it is comparable across sides, unlike one step's loss); peak RSS of the training process
(``ru_maxrss`` of the child); MFU = tokens/s x (4 N_frozen + 6 N_trainable) FLOPs per token / the
matmul peak measured in this run (square matmuls in the native precision on the same threads).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from machine import describe, native_cpu_precision  # noqa: E402

ALPACA = ROOT.parent / "shared" / "data" / "alpaca_en_demo.json"
CACHE = os.environ.get("FTS_MODEL_CACHE", "/root/.cache/fts-models")
MODEL_DIR = Path(CACHE) / "smollm2-135m-instruct-v1"
# SmolLM2's chat template inserts this system turn (no final full stop; LLaMA-Factory's "smollm2" template has one)
SMOL_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
SIDES = ("studio", "LF", "LF-no-gc", "ref")

LF_YAML = """\
model_name_or_path: {model}
trust_remote_code: false
stage: sft
do_train: true
finetuning_type: lora
lora_rank: {rank}
lora_alpha: {alpha}
lora_dropout: {dropout}
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
{precision_line}
use_cpu: true
seed: 42
include_num_input_tokens_seen: non_padding
disable_tqdm: true
disable_gradient_checkpointing: {no_gc}
"""

# Run a command and report its process tree's peak RSS (RUSAGE_CHILDREN of this wrapper = its own children only).
PEAK_WRAPPER = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
                "print('PEAK_RSS_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
                "sys.exit(rc)")


def thread_env(threads: int) -> dict[str, str]:
    return dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
                OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), FTS_TORCH_THREADS=str(threads),
                FTS_MODEL_CACHE=CACHE, CUDA_VISIBLE_DEVICES="", TOKENIZERS_PARALLELISM="false")


def run_measured(cmd: list[str], threads: int, cwd: Path, log: Path) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes of the command's processes); exits with the log on failure."""
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", PEAK_WRAPPER, *cmd], env=thread_env(threads), capture_output=True,
                         text=True, cwd=cwd)
    wall = time.monotonic() - t0
    log.write_text(out.stdout + "\n" + out.stderr)
    if out.returncode:
        sys.exit(f"{cmd[0]} failed (log {log}):\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    peak = next(int(line.split()[1]) * 1024 for line in out.stderr.splitlines() if line.startswith("PEAK_RSS_KIB"))
    return wall, peak


def run_studio(args, tmp: Path) -> dict:
    result = tmp / "studio.json"
    cmd = [str(ROOT / ".venv/bin/python"), str(ROOT / "bench/bench_training.py"), "--threads", str(args.threads),
           "--rank", str(args.rank), "--seq", str(args.seq), "--batch", str(args.batch), "--steps", str(args.steps),
           "--dropout", str(args.dropout), "--json", str(result)]  # precision, checkpointing, batches: the defaults
    wall, peak = run_measured(cmd, args.threads, ROOT, tmp / "studio.log")
    r = json.loads(result.read_text())
    return {"tokens_per_s": r["tokens_per_s"], "tokens": r["tokens"], "train_s": r["train_seconds"],
            "train_loss": r["train_loss"], "peak_rss": peak, "wall_s": wall, "first_step_s": r["seconds_to_first_step"],
            "note": f"checkpointing {r['speed']['gradient_checkpointing_why']}; batches padding-free: "
                    f"{r['speed']['padding_free']}; attention {r['speed']['attention']}"}


def run_lf(args, tmp: Path, no_gc: bool) -> dict:
    name = "lf-nogc" if no_gc else "lf"
    (tmp / "dataset_info.json").write_text(json.dumps({"alpaca_en_demo": {"file_name": str(ALPACA)}}))
    out_dir = tmp / f"{name}-out"
    cfg = tmp / f"{name}.yaml"
    precision_line = "bf16: true" if args.precision == "bf16" else "bf16: false"
    cfg.write_text(LF_YAML.format(model=MODEL_DIR, rank=args.rank, alpha=args.alpha, dropout=args.dropout,
                                  dataset_dir=tmp, system=SMOL_SYSTEM, seq=args.seq, rows=args.steps * args.batch,
                                  out=out_dir, batch=args.batch, steps=args.steps, precision_line=precision_line,
                                  no_gc="true" if no_gc else "false"))
    cli = Path(args.lf_python).parent / "llamafactory-cli"
    # torch threads: OMP_NUM_THREADS sets torch's intra-op pool at import; LF has no thread option of its own
    wall, peak = run_measured([str(cli), "train", str(cfg)], args.threads, tmp, tmp / f"{name}.log")
    res = json.loads((out_dir / "train_results.json").read_text())
    state = json.loads((out_dir / "trainer_state.json").read_text())
    tokens = state.get("num_input_tokens_seen") or res.get("num_input_tokens_seen")
    runtime = float(res["train_runtime"])
    return {"tokens_per_s": tokens / runtime, "tokens": tokens, "train_s": runtime, "train_loss": res["train_loss"],
            "peak_rss": peak, "wall_s": wall, "first_step_s": None,
            "note": f"checkpointing {'off' if no_gc else 'on (its default)'}; padded batches"}


def run_ref(args, tmp: Path) -> dict:
    result = tmp / "ref.json"
    cmd = [str(ROOT / ".venv/bin/python"), str(ROOT / "bench/reference_trainer.py"), "--model-dir", str(MODEL_DIR),
           "--rank", str(args.rank), "--alpha", str(args.alpha), "--dropout", str(args.dropout), "--seq", str(args.seq),
           "--batch", str(args.batch), "--steps", str(args.steps), "--precision", args.precision,
           "--threads", str(args.threads), "--json", str(result)]
    wall, peak = run_measured(cmd, args.threads, ROOT, tmp / "ref.log")
    r = json.loads(result.read_text())
    return {"tokens_per_s": r["tokens_per_s"], "tokens": r["tokens"], "train_s": r["train_seconds"],
            "train_loss": r["train_loss"], "peak_rss": peak, "wall_s": wall, "first_step_s": r["seconds_to_first_step"],
            "note": "transformers Trainer + peft, SDPA, DataCollatorWithFlattening, checkpointing off"}


def matmul_peak_flops(precision: str, threads: int) -> float:
    """Best FLOP/s of square matmuls (n = 1024, 2048) in ``precision`` on ``threads`` threads."""
    code = f"""
import time, torch
torch.set_num_threads({threads})
dtype = torch.bfloat16 if "{precision}" == "bf16" else torch.float32
best = 0.0
for n in (1024, 2048):
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    for _ in range(5):
        t = time.perf_counter(); a @ b; dt = time.perf_counter() - t
        best = max(best, 2 * n ** 3 / dt)
print(best)
"""
    out = subprocess.run([str(ROOT / ".venv/bin/python"), "-c", code], env=thread_env(threads), capture_output=True,
                         text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def flops_per_token(args) -> tuple[float, int, int]:
    """(4 N_frozen + 6 N_trainable, N_frozen, N_trainable) of the model with its LoRA, counted on the
    meta device (no weights read). The tied embedding counts once: it is the LM head's matmul."""
    code = f"""
import torch
from transformers import AutoConfig, AutoModelForCausalLM
from peft import LoraConfig, get_peft_model
with torch.device("meta"):
    m = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained("{MODEL_DIR}"))
m = get_peft_model(m, LoraConfig(r={args.rank}, lora_alpha={args.alpha}, target_modules="all-linear", task_type="CAUSAL_LM"))
trainable, total = m.get_nb_trainable_parameters()
print(total - trainable, trainable)
"""
    out = subprocess.run([str(ROOT / ".venv/bin/python"), "-c", code], env=thread_env(1), capture_output=True,
                         text=True, check=True)
    frozen, trainable = (int(x) for x in out.stdout.strip().splitlines()[-1].split())
    return 4 * frozen + 6 * trainable, frozen, trainable


def median(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lf-python", default="/tmp/lfvenv/bin/python")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=int, default=32)
    p.add_argument("--dropout", type=float, default=0.0, help="LoRA dropout, every side (0: the default of the studio and of LLaMA-Factory)")
    p.add_argument("--seq", type=int, default=512, help="cut-off")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds; medians are reported")
    p.add_argument("--sides", nargs="+", default=list(SIDES), choices=SIDES)
    p.add_argument("--precision", default=None, help="default: the machine's native precision")
    args = p.parse_args()
    args.precision = args.precision or native_cpu_precision()
    print(describe())
    print(f"setting: SmolLM2-135M-Instruct, {args.steps * args.batch} alpaca rows, cut-off {args.seq}, batch "
          f"{args.batch}, {args.steps} steps, LoRA r{args.rank} alpha {args.alpha} dropout {args.dropout} all-linear, "
          f"{args.precision}, {args.threads} threads, {args.repeats} interleaved rounds")
    print(f"load average before: {os.getloadavg()}", flush=True)
    per_token, frozen, trainable = flops_per_token(args)
    peaks = [matmul_peak_flops(args.precision, args.threads)]
    print(f"FLOPs per token 4 x {frozen:,} + 6 x {trainable:,} = {per_token / 1e9:.3f} GFLOP; matmul peak "
          f"{peaks[0] / 1e9:.0f} GFLOP/s", flush=True)

    runners = {"studio": run_studio, "LF": lambda a, t: run_lf(a, t, False),
               "LF-no-gc": lambda a, t: run_lf(a, t, True), "ref": run_ref}
    results: dict[str, list[dict]] = {s: [] for s in args.sides}
    for round_ in range(args.repeats):
        for side in args.sides:
            with tempfile.TemporaryDirectory(prefix=f"bench-{side}-") as tmp:
                r = runners[side](args, Path(tmp))
            results[side].append(r)
            print(f"[round {round_ + 1}] {side:9s} {r['tokens_per_s']:7.1f} tok/s  {r['tokens']} tokens in "
                  f"{r['train_s']:6.1f} s  train loss {r['train_loss']:.4f}  peak RSS {r['peak_rss'] / 2**30:.2f} GiB  "
                  f"wall {r['wall_s']:.0f} s  load {os.getloadavg()[0]:.2f}", flush=True)
        peaks.append(matmul_peak_flops(args.precision, args.threads))
    peak = max(peaks)

    base = median(results["LF"], "tokens_per_s") if "LF" in results else None
    print(f"\nmatmul peak (best of {len(peaks)} measurements in this run): {peak / 1e9:.0f} GFLOP/s {args.precision}")
    print(f"load average after: {os.getloadavg()}")
    print(f"\n{'side':9s} {'tok/s':>7s} {'vs LF':>6s} {'tokens':>7s} {'train s':>8s} {'loss':>7s} {'peak RSS':>9s} "
          f"{'MFU':>6s} {'1st step':>8s}  (medians of {args.repeats}; all rounds' tok/s)")
    for side, runs in results.items():
        tps = median(runs, "tokens_per_s")
        first = median(runs, "first_step_s")
        print(f"{side:9s} {tps:7.1f} {(tps / base if base else float('nan')):6.2f} {int(median(runs, 'tokens')):7d} "
              f"{median(runs, 'train_s'):8.1f} {median(runs, 'train_loss'):7.4f} "
              f"{median(runs, 'peak_rss') / 2**30:8.2f}G {100 * tps * per_token / peak:5.1f}% "
              f"{(f'{first:7.1f}s' if first is not None else '      -')}  "
              f"[{', '.join(format(r['tokens_per_s'], '.1f') for r in runs)}]")
    for side, runs in results.items():
        print(f"  {side}: {runs[-1]['note']}")
    if "studio" in results and "LF" in results:
        loss_gap = median(results["studio"], "train_loss") / median(results["LF"], "train_loss") - 1
        print(f"\nstudio default vs LF default: {median(results['studio'], 'tokens_per_s') / base:.2f}x tokens/s, "
              f"mean training loss {100 * loss_gap:+.1f}%")
    if "studio" in results and "ref" in results:
        print(f"studio vs plain Trainer reference: "
              f"{median(results['studio'], 'tokens_per_s') / median(results['ref'], 'tokens_per_s'):.2f}x tokens/s")


if __name__ == "__main__":
    main()
