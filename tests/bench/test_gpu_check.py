"""The GPU check kit (bench/gpu_check.py) in its CPU mode, so it never rots between GPU sessions.

Runs the real command as a subprocess (tiny models, 3 steps per training run) and reads its JSON:
every planned part has a status, nothing is left pending, trained parts have finite losses, the
chat engine answered and the merged model verified.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import gpu_check

STATUSES = {"ok", "failed", "skipped"}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("gpu-check") / "check.json"
    env = {**os.environ, "FTS_TORCH_THREADS": os.environ.get("FTS_TORCH_THREADS", "1")}
    # --budget-s: no part may be skipped for time here (the < 2 min target is the bench's, not a test's);
    # --wheels: a folder that does not exist, so the wheels part must say why it installed nothing.
    cmd = [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", "cpu", "--tiny", "--out", str(out),
           "--budget-s", "1200", "--wheels", str(out.parent / "no-wheels"), "--workdir", str(out.parent / "work")]
    done = subprocess.run(cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.is_file(), f"no JSON written (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    data = json.loads(out.read_text(encoding="utf-8"))
    data["returncode"], data["text_report"] = done.returncode, out.with_suffix(".txt").read_text(encoding="utf-8")
    return data


def _parts(report: dict) -> dict[str, dict]:
    return {p["name"]: p for p in report["parts"]}


@pytest.mark.slow
def test_every_planned_part_has_a_status_and_a_reason(report):
    parts = _parts(report)
    assert list(parts) == gpu_check.PLAN
    for p in parts.values():
        assert p["status"] in STATUSES, p
        if p["status"] == "skipped":
            assert p["reason"], f"{p['name']} skipped without a reason"
        if p["status"] == "failed":
            assert p["error"], f"{p['name']} failed without an error"
    assert report["summary"]["pending"] == 0
    failed = {n: p["error"] for n, p in parts.items() if p["status"] == "failed"}
    assert not failed and report["returncode"] == 0, failed
    assert "no wheel folder" in parts["wheels"]["reason"]
    assert "no CUDA" in parts["pytest_gpu"]["reason"]
    for name, p in parts.items():
        assert name in report["text_report"] and p["status"] in report["text_report"]


@pytest.mark.slow
def test_trained_parts_have_finite_losses_speed_and_an_estimate(report):
    trained = {n: p for n, p in _parts(report).items() if n.startswith("train.")}
    core = [n for n in gpu_check.CORE_TRAINING if n != "train.qlora.ckpt"]  # QLoRA: only where bitsandbytes is
    assert all(trained[n]["status"] == "ok" for n in core), {n: trained[n]["status"] for n in core}
    for name, p in trained.items():
        if p["status"] != "ok":
            assert p["status"] == "skipped" and p["reason"], name
            continue
        f = p["figures"]
        assert f["steps"] == 3 and len(f["losses"]) == 3, name
        assert f["losses_finite"] and all(math.isfinite(x) for x in f["losses"]), (name, f["losses"])
        assert f["tokens_per_s"] > 0 and 0 < f["mfu"] < 1, (name, f["tokens_per_s"], f["mfu"])
        assert f["first_step_s"] > 0 and f["start_to_first_step_s"] >= f["first_step_s"], name
        assert Path(f["adapter_dir"], "adapter_config.json").is_file(), name
        est = f["estimate"]
        assert est["status"] == "ok" and est["estimated_bytes"] > 0 and est["measured_bytes"] > 0, (name, est)
        assert math.isfinite(est["error_percent"]), name
    dora = trained["train.dora.ckpt"]["figures"]["spec"]["method"]
    assert dora["name"] == "lora" and dora["use_dora"] is True
    no_ckpt = trained["train.lora.no-ckpt"]["figures"]["spec"]["train"]
    assert no_ckpt["gradient_checkpointing"] is False


@pytest.mark.slow
def test_chat_and_merge_ran_through_the_studio(report):
    parts = _parts(report)
    chat = parts["chat"]["figures"]
    assert parts["chat"]["status"] == "ok"
    assert chat["base"]["new_tokens"] >= 1 and chat["adapter"]["new_tokens"] >= 1 and chat["ttft_s"] > 0
    merged = parts["merge_verify"]
    assert merged["status"] == "ok", merged["error"]
    assert merged["figures"]["max_abs_diff"] <= merged["figures"]["tolerance"]
    assert merged["figures"]["checks"]["closer_to_adapter_than_to_base"] is True
    peak = parts["matmul_peak"]["figures"]
    assert peak["peak_flops"] > 0


def test_wheel_names_parse_to_distributions():
    assert gpu_check.wheel_distribution(Path("pydantic_core-2.50.5-cp312-cp312-manylinux2014_x86_64.whl")) == \
        ("pydantic_core", "2.50.5")
    assert gpu_check.wheel_distribution(Path("qwen_vl_utils-0.0.14-py3-none-any.whl")) == ("qwen_vl_utils", "0.0.14")
    assert gpu_check._older("4.15.0", "4.16.0") and not gpu_check._older("4.16.0", "4.16.0")


def test_a_missing_package_names_the_left_out_wheel(tmp_path):
    (tmp_path / gpu_check.LEFT_OUT_FILE).write_text("no-such-dist==1.0 (42 MiB would exceed the 20 MiB budget)\n")
    reason = gpu_check.missing_package_reason("no_such_module_here", "no-such-dist", tmp_path)
    assert "left out" in reason and "42 MiB" in reason
    assert gpu_check.missing_package_reason("json", "json", tmp_path) is None


def test_gpu_test_files_are_found():
    files = gpu_check.gpu_test_files()
    assert ROOT / "tests" / "models" / "test_tiny_vl.py" in files
    assert Path(__file__).resolve() not in files  # names the marker in a string, marks nothing
    assert all("@pytest.mark.gpu" in f.read_text(encoding="utf-8") for f in files)


def _write_wheel(folder: Path, dist: str, version: str, module: str, source: str) -> Path:
    """A minimal pure-Python wheel (what pip needs: the module, METADATA, WHEEL, RECORD)."""
    import zipfile

    info = f"{dist}-{version}.dist-info"
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    files = {f"{module}/__init__.py": source,
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return path


def test_wheels_install_only_what_is_missing_into_a_target_on_sys_path(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _write_wheel(wheels, "fts_gpu_probe", "1.0", "fts_gpu_probe", "VALUE = 42\n")
    _write_wheel(wheels, "pytest", "0.0.1", "pytest_shadow", "")  # installed here: must be left alone
    figures = gpu_check.install_wheels(wheels, tmp_path / "site")
    assert figures["installed"] == ["fts_gpu_probe-1.0-py3-none-any.whl"]
    assert "pytest" in figures["already_present"] and figures["left_out"] == []
    assert sys.path[0] == str(tmp_path / "site") and os.environ["PYTHONPATH"] == str(tmp_path / "site")
    import fts_gpu_probe

    assert fts_gpu_probe.VALUE == 42 and Path(fts_gpu_probe.__file__).is_relative_to(tmp_path / "site")
    assert not (tmp_path / "site" / "pytest_shadow").exists()


def test_an_older_preinstalled_package_is_upgraded_only_when_listed(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "")
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir(), new.mkdir()
    _write_wheel(old, "fts_gpu_probe2", "1.0", "fts_gpu_probe2", "VALUE = 1\n")
    gpu_check.install_wheels(old, tmp_path / "site-old")  # now "preinstalled" at 1.0
    _write_wheel(new, "fts_gpu_probe2", "2.0", "fts_gpu_probe2", "VALUE = 2\n")
    assert gpu_check.install_wheels(new, tmp_path / "site-a")["installed"] == []  # not listed: kept at 1.0
    monkeypatch.setattr(gpu_check, "UPGRADE_IF_OLDER", {"fts_gpu_probe2"})
    figures = gpu_check.install_wheels(new, tmp_path / "site-b")
    assert figures["upgraded_over_preinstalled"] == {"fts_gpu_probe2": "1.0 -> 2.0"}
    assert gpu_check.installed_version("fts_gpu_probe2") == "2.0"


@pytest.mark.slow
def test_estimate_errors_are_recomputed_from_the_stored_spec_and_config(report, tmp_path):
    import copy

    import gpu_estimate_errors

    assert gpu_estimate_errors.main([str(_saved(report, tmp_path / "cpu.json"))]) == 2  # CPU peaks: not comparable
    as_gpu = copy.deepcopy(report)
    as_gpu["meta"]["device"] = "cuda"
    for p in as_gpu["parts"]:
        if p["name"].startswith("train.") and p["status"] == "ok":
            p["figures"]["memory"]["max_memory_reserved_bytes"] = 2**30
    found = {r["part"]: r for r in gpu_estimate_errors.rows(as_gpu)}
    assert "train.lora.ckpt" in found and "train.vl-lora.ckpt" in found
    for r in found.values():
        assert r["now"] > 0 and r["error_now"] == pytest.approx((r["now"] / 2**30 - 1) * 100)
    # without checkpointing every layer keeps its activations: the estimate must grow
    assert found["train.lora.no-ckpt"]["now"] > found["train.lora.ckpt"]["now"]
    assert gpu_estimate_errors.main([str(_saved(as_gpu, tmp_path / "gpu.json"))]) == 0


def _saved(data: dict, path: Path) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path
