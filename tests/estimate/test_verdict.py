"""Verdicts against a card and suggestions that really make a run fit."""
from __future__ import annotations

import pytest

from studio.estimate import GIB, GPU_CARDS, ErrorBand, EstimateRequest, estimate, find_card, lookup_config, suggestions, verdict


def test_thresholds():
    cap = 100 * GIB
    assert verdict(int(89 * GIB), cap, None) == "fits"  # no band known: fits below 90%
    assert verdict(int(95 * GIB), cap, None) == "tight"
    assert verdict(int(101 * GIB), cap, None) == "does not fit"


def test_fits_only_when_the_upper_edge_of_the_band_fits():
    cap, band = 100 * GIB, ErrorBand(0.12, 14)
    assert verdict(int(89 * GIB), cap, band) == "fits"       # 89 x 1.12 = 99.7
    assert verdict(int(90 * GIB), cap, band) == "tight"      # 100.8: the estimate fits, its upper edge not
    assert verdict(int(100 * GIB), cap, band) == "tight"
    assert verdict(int(101 * GIB), cap, band) == "does not fit"
    assert band.text() == "±12%, 14 published runs"


def test_common_cards_cover_the_sizes():
    sizes = {c.nominal_gb for c in GPU_CARDS}
    assert {8, 12, 16, 24, 40, 48, 80, 141} <= sizes
    assert find_card("4090").name == "RTX 4090 24 GB" and find_card("h200").nominal_gb == 141
    assert find_card("a100 80").capacity_bytes == 80 * GIB


@pytest.mark.parametrize("model,kw,card", [
    ("qwen2.5-7b", {"method": "lora", "batch_size": 4, "seq_len": 4096}, "4090"),
    ("llama-3.1-8b", {"method": "full", "master_weights": True}, "A100 80"),
    ("qwen2.5-vl-7b", {"images_per_sample": 4, "max_pixels": 1280 * 28 * 28, "seq_len": 2048}, "A100 40"),
    ("qwen2.5-72b", {"method": "lora", "seq_len": 4096}, "H100"),
])
def test_suggestions_really_fit(model, kw, card):
    req = EstimateRequest(config=lookup_config(model), **kw)
    cap = find_card(card).capacity_bytes
    before = estimate(req).total_bytes
    assert verdict(before, cap) == "does not fit"
    out = suggestions(req, cap)
    assert out and out[0].verdict == "fits"
    for s in out:
        assert s.estimate.total_bytes < before
        assert s.estimate.total_bytes == estimate(s.request).total_bytes
        if s.verdict == "fits":
            assert s.estimate.upper_bytes <= cap


def test_smaller_batch_keeps_the_effective_batch():
    req = EstimateRequest(config=lookup_config("qwen2.5-3b"), batch_size=16, grad_accum=2, seq_len=2048)
    cap = find_card("4090").capacity_bytes
    batch = [s for s in suggestions(req, cap) if s.change.startswith("batch size")]
    assert batch and batch[0].request.effective_batch >= req.effective_batch
    assert batch[0].request.batch_size < 16


def test_no_suggestions_needed_when_it_fits():
    req = EstimateRequest(config=lookup_config("smollm2-135m"), seq_len=512)
    assert verdict(estimate(req).total_bytes, find_card("4090").capacity_bytes) == "fits"
