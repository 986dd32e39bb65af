"""Spec builders shared by the training tests: small and fast settings."""
from __future__ import annotations

# Small and fast: short cut-off, few steps, no gradient checkpointing (nothing to save on 135M).
FAST_TEXT_TRAIN = dict(max_steps=8, batch_size=2, grad_accum=1, cutoff_len=128, learning_rate=1e-3,
                       gradient_checkpointing=False, logging_steps=1, save_steps=4, warmup_ratio=0.0,
                       lr_scheduler="constant")
FAST_VL_TRAIN = dict(max_steps=12, batch_size=2, grad_accum=1, cutoff_len=256, learning_rate=5e-3,
                     gradient_checkpointing=False, logging_steps=1, save_steps=6, warmup_ratio=0.0,
                     lr_scheduler="constant")
SMALL_IMAGES = dict(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 64)


def text_spec(model: str, dataset_id: int, method: dict | str = "lora", **train) -> dict:
    return {"model": model, "data": {"dataset_id": dataset_id, "max_rows": 4, "max_eval_rows": 4},
            "method": method, "train": {**FAST_TEXT_TRAIN, **train}}


def vl_spec(model: str, dataset_id: int, method: dict | str = "lora", vision: dict | None = None, **train) -> dict:
    return {"model": model, "data": {"dataset_id": dataset_id}, "method": method,
            "train": {**FAST_VL_TRAIN, **train}, "vision": {**SMALL_IMAGES, **(vision or {})}}
