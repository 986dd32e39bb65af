"""The built-in model cache: built once, atomically, under a cross-process lock; reused after."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from studio.models import TINY_QWEN_VL_SMALLVOCAB, prepare, prepared_path
from studio.models.cache import MANIFEST, cache_root, is_complete, materialise


def _slow_build(calls: list, delay: float = 0.3):
    def build(stage: Path) -> dict:
        calls.append(stage)
        time.sleep(delay)  # long enough for a second builder to arrive while the first is working
        (stage / "weights.bin").write_bytes(b"x" * 1000)
        return {"ok": True}
    return build


def test_concurrent_builders_build_once(tmp_path):
    final = tmp_path / "model-v1"
    calls, results = [], []
    threads = [threading.Thread(target=lambda: results.append(materialise(final, _slow_build(calls))))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and results == [final] * 3
    assert is_complete(final) and (final / "weights.bin").stat().st_size == 1000
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []


def test_crashed_build_leaves_nothing_that_looks_done(tmp_path):
    final = tmp_path / "model-v1"

    def crash(stage: Path) -> dict:
        (stage / "half-written.safetensors").write_bytes(b"\0" * 10)
        raise RuntimeError("killed mid-build")

    with pytest.raises(RuntimeError, match="mid-build"):
        materialise(final, crash)
    assert not final.exists() and not list(tmp_path.glob("*.partial"))

    # A leftover of a process killed with SIGKILL (no cleanup ran) is removed by the next builder,
    # and so is a final folder that lost its manifest.
    (tmp_path / ".model-v1.dead0000.partial").mkdir()
    final.mkdir()
    (final / "config.json").write_text("{}")
    calls: list = []
    assert materialise(final, _slow_build(calls, 0)) == final
    assert len(calls) == 1 and not (final / "config.json").exists() and (final / MANIFEST).is_file()
    assert not list(tmp_path.glob(".*.partial"))


def test_cache_location_follows_env_then_workspace(tmp_path, monkeypatch):
    monkeypatch.delenv("FTS_MODEL_CACHE", raising=False)
    monkeypatch.setenv("FTS_WORKSPACE", str(tmp_path / "ws"))
    assert cache_root() == (tmp_path / "ws" / "models" / "builtin").resolve()
    monkeypatch.setenv("FTS_MODEL_CACHE", str(tmp_path / "shared-cache"))
    assert cache_root() == (tmp_path / "shared-cache").resolve()


def test_prepare_builtin_reports_progress_then_reuses_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FTS_MODEL_CACHE", str(tmp_path))
    stages: list[tuple[float, str]] = []
    folder = prepare(TINY_QWEN_VL_SMALLVOCAB, progress=lambda f, m: stages.append((f, m)))
    assert folder.parent == tmp_path and prepared_path(TINY_QWEN_VL_SMALLVOCAB) == folder
    fractions = [f for f, _ in stages]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(stages) >= 5
    assert any("tokenizer" in m for _, m in stages)
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json",
            "generation_config.json", MANIFEST} <= {p.name for p in folder.iterdir()}

    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    started = time.perf_counter()
    assert prepare(TINY_QWEN_VL_SMALLVOCAB) == folder
    assert time.perf_counter() - started < 0.5
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp  # not rebuilt


def test_built_files_follow_the_umask(tmp_path):
    import os

    def build(stage: Path) -> dict:
        (stage / "model.safetensors").write_bytes(b"x")
        (stage / "model.safetensors").chmod(0o600)  # as written through a temp file
        return {}

    final = materialise(tmp_path / "m-v1", build)
    umask = os.umask(0)
    os.umask(umask)
    assert (final / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask
