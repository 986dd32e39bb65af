"""Chat speed on the built-in SmolLM2 on CPU: time to first token and tokens/s, per pane.

    .venv/bin/python bench/bench_chat.py                 # base + one LoRA adapter, 3 rounds
    .venv/bin/python bench/bench_chat.py --threads 1 --rounds 5 --max-new-tokens 64 --dtype bfloat16

Two views of the same thing:
- engine: ``ChatEngine.generate`` in this process (model warm, adapter already attached);
- as the UI sees it: messages sent with ``service.send_message`` to a real worker process
  (``python -m jobs.worker``), polled from the database every 50 ms like the UI's timer; "first
  text" is when ``service.poll`` first shows a partial answer. Also: how long ``service.stop``
  takes to end a long answer.
Target: the first token arrives in under 1.5 s once the model is warm.

The adapter is a random-weight LoRA (r=16, all linear layers) made here, so the numbers include
the cost of the LoRA layers without needing a training run first.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402  (bench/machine.py)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPT = "Explain in a few sentences why the sky is blue."
TARGET_TTFT_S = 1.5
POLL_S = 0.05


def make_adapter(folder: Path, model_path: Path) -> Path:
    from peft import LoraConfig, get_peft_model

    from studio.models import load_model

    model = load_model(model_path, "text", dtype="float32")
    config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(folder)
    return folder


def bench_engine(engine, adapter, settings, rounds: int) -> dict[str, list]:
    """Per pane: [(ttft_s, tokens_per_s, new_tokens)] over ``rounds`` generations."""
    messages = [{"role": "user", "content": [{"type": "text", "text": PROMPT}]}]
    results: dict[str, list] = {"base": [], "adapter": []}
    for _ in range(rounds):
        for pane, ref in (("base", None), ("adapter", adapter)):
            reply = engine.generate(messages, settings, adapter=ref)
            results[pane].append((reply.ttft_s, reply.tokens_per_s, reply.new_tokens))
    return results


def wait_for(db, job_id: int, until) -> dict:
    from studio.inference import service

    while True:
        state = service.poll(db, job_id)
        if until(state):
            return state
        time.sleep(POLL_S)


def bench_ui(db, chat_id: int, rounds: int) -> list[tuple[float, float, dict]]:
    """(seconds until poll() shows text, seconds until done, pane metas) per message."""
    from studio.inference import service

    out = []
    for _ in range(rounds):
        sent = time.perf_counter()
        job_id = service.send_message(db, chat_id, PROMPT)
        wait_for(db, job_id, lambda s: s["done"] or any(p["text"] for p in s["panes"].values()))
        first = time.perf_counter() - sent
        state = wait_for(db, job_id, lambda s: s["done"])
        out.append((first, time.perf_counter() - sent, {k: p["meta"] for k, p in state["panes"].items()}))
    return out


def bench_stop(db, chat_id: int) -> float:
    """Seconds from ``service.stop`` until the job is finished, during a long answer."""
    from studio.inference import service

    service.update_settings(db, chat_id, {"max_new_tokens": 1000})
    job_id = service.send_message(db, chat_id, "Count from 1 to 300, separated by commas.")
    wait_for(db, job_id, lambda s: s["done"] or len(s["panes"]["base"]["text"]) >= 20)
    asked = time.perf_counter()
    service.stop(db, job_id)
    while not service.poll(db, job_id)["done"]:
        time.sleep(0.01)
    return time.perf_counter() - asked


def start_worker(db, args) -> subprocess.Popen:
    env = {**os.environ, "FTS_WORKSPACE": str(db.settings.workspace), "FTS_DB_URL": db.settings.db_url,
           "FTS_CHAT_DTYPE": args.dtype}
    if args.threads:
        env["FTS_TORCH_THREADS"] = str(args.threads)
    return subprocess.Popen([sys.executable, "-m", "jobs.worker", "--poll", "0.05"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: PyTorch's choice)")
    p.add_argument("--dtype", default="auto", help="auto (fp32 on CPU), bfloat16, float32")
    args = p.parse_args()

    import torch

    from storage.db import Database
    from storage.models import Adapter
    from studio.inference import service
    from studio.inference.adapters import AdapterRef
    from studio.inference.engine import ChatEngine
    from studio.inference.settings import ChatSettings
    from studio.models import SMOLLM2, prepare

    print(describe())
    settings = ChatSettings(temperature=0.0, max_new_tokens=args.max_new_tokens, repetition_penalty=1.0)
    print(f"torch {torch.__version__}, {args.threads or torch.get_num_threads()} thread(s), dtype {args.dtype}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    t = time.perf_counter()
    model_path = prepare(SMOLLM2)
    print(f"prepare {SMOLLM2}: {time.perf_counter() - t:.1f} s")

    with tempfile.TemporaryDirectory() as tmp:
        db = Database.open(str(Path(tmp) / "workspace"))
        adapter_dir = make_adapter(db.workspace.run_dir(1) / "adapter", model_path)
        with db.session() as s:
            row = Adapter(name="random-lora", method="lora", base_model_ref=SMOLLM2,
                          path=db.workspace.relative(adapter_dir))
            s.add(row)
            s.flush()
            adapter = AdapterRef(id=row.id, name=row.name, path=adapter_dir, base_model_ref=SMOLLM2)

        # -- the engine alone ------------------------------------------------------------------------
        engine = ChatEngine(dtype=args.dtype, threads=args.threads)
        t = time.perf_counter()
        engine.ensure_base(SMOLLM2)
        print(f"load base model: {time.perf_counter() - t:.2f} s")
        t = time.perf_counter()
        engine.generate([{"role": "user", "content": "Hi"}], settings.model_copy(update={"max_new_tokens": 4}),
                        adapter=adapter)  # warm-up; also attaches the adapter
        print(f"warm-up incl. attaching the adapter: {time.perf_counter() - t:.2f} s\n")
        print(f"engine, {args.rounds} rounds, up to {args.max_new_tokens} new tokens, greedy:")
        print(f"  {'pane':8} {'TTFT median':>12} {'TTFT max':>9} {'tokens/s':>9} {'tokens':>7}")
        worst = 0.0
        for pane, rows in bench_engine(engine, adapter, settings, args.rounds).items():
            ttfts = [r[0] for r in rows]
            worst = max(worst, max(ttfts))
            print(f"  {pane:8} {statistics.median(ttfts):11.3f}s {max(ttfts):8.3f}s "
                  f"{statistics.median(r[1] for r in rows if r[1]):9.1f} {rows[-1][2]:7d}")
        engine.unload()

        # -- through a real worker process, as the UI polls it ---------------------------------------
        worker = start_worker(db, args)
        try:
            chat_id = service.create_chat(db, SMOLLM2, [adapter.id], settings.model_dump())
            t = time.perf_counter()
            bench_ui(db, chat_id, 1)
            print(f"\nworker: first message incl. loading the model: {time.perf_counter() - t:.2f} s")
            print(f"as the UI sees it (send_message -> first text in poll() every {POLL_S * 1000:.0f} ms / done):")
            for i, (first, done, metas) in enumerate(bench_ui(db, chat_id, args.rounds), 1):
                panes = ", ".join(f"{k} TTFT {m['ttft_s']:.3f}s {m['tokens_per_s']} tok/s" for k, m in metas.items())
                print(f"  message {i}: first text after {first:.3f} s, done after {done:.2f} s ({panes})")
            print(f"stop during a long answer: the job ended {bench_stop(db, chat_id):.3f} s after service.stop()")
        finally:
            worker.terminate()
            worker.wait(timeout=30)
            db.dispose()

    verdict = "OK" if worst < TARGET_TTFT_S else "SLOW"
    print(f"\nworst engine TTFT {worst:.3f} s vs target {TARGET_TTFT_S} s: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
