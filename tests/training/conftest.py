"""Fixtures for training tests: real datasets imported through the studio, spec builders."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from studio.models import SMOLLM2, TINY_QWEN_VL_SMALLVOCAB


@pytest.fixture(autouse=True)
def _one_torch_thread(monkeypatch):
    """Training in tests uses one PyTorch thread (FTS_TORCH_THREADS, read by the recipe, also in
    worker processes) unless the environment says otherwise. Tests share the CPU with other
    processes, and spinning OpenMP threads then make each step 3-10x slower than one thread
    (measured on the 2-core dev machine); on an idle machine one thread costs at most ~1.5x."""
    if "FTS_TORCH_THREADS" not in os.environ:
        monkeypatch.setenv("FTS_TORCH_THREADS", "1")


def _upload(db, source: Path) -> Path:
    dest = db.workspace.uploads_dir / source.name
    if source.is_dir():
        shutil.copytree(source, dest)
    else:
        shutil.copy2(source, dest)
    return dest


def import_alpaca(db, sample_data: Path) -> int:
    """48 Alpaca rows, 8 of them held out as the validation split."""
    from studio.datasets import ImportOptions, import_dataset

    src = _upload(db, sample_data / "alpaca_en_demo.json")
    return import_dataset(db, src, ImportOptions(limit=48, val_fraction=8 / 48, seed=1)).dataset.id


@pytest.fixture
def alpaca_id(db, sample_data) -> int:
    """48 Alpaca rows, 8 of them held out as the validation split."""
    return import_alpaca(db, sample_data)


@pytest.fixture
def mllm_id(db, sample_data) -> int:
    """The 6 ShareGPT-style multimodal demo rows with their 3 images."""
    from studio.datasets import ImportOptions, import_dataset

    _upload(db, sample_data / "mllm_demo_data")
    src = _upload(db, sample_data / "mllm_demo.json")
    return import_dataset(db, src, ImportOptions()).dataset.id


@pytest.fixture
def smollm2(smollm2_path) -> str:
    """The built-in SmolLM2 ref (prepared once per session into the shared model cache)."""
    return SMOLLM2


@pytest.fixture
def tiny_vl(tiny_vl_small_path) -> str:
    return TINY_QWEN_VL_SMALLVOCAB
