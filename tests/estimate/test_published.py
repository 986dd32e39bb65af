"""The estimator against published, measured fine-tuning peaks (studio/estimate/published_runs.json).

Rule: at least 70% of the comparable entries within 15% of the published number."""
from __future__ import annotations

from studio.estimate.published import (MIN_AGREEING, TOLERANCE, agreement, compare_published, format_table,
                                       load_published_runs)


def test_entries_are_documented():
    for run in load_published_runs():
        assert run["url"].startswith("https://") and run["source"] and run["notes"]
        assert run["measure"] in ("torch_max_reserved", "torch_peak_active", "device_total")
        assert run["unit"] in ("GB", "GiB") and run["measured"] > 0


def test_estimates_agree_with_published_measurements():
    comparisons = compare_published()
    print("\n" + format_table(comparisons))
    good, total = agreement(comparisons)
    assert total >= 8
    assert good / total >= MIN_AGREEING, format_table(comparisons)
    # the HF + peft benchmark entries (the studio's own stack) all agree
    peft = [c for c in comparisons if c.run["id"].startswith("peft-")]
    assert peft and all(abs(c.error) <= TOLERANCE for c in peft)


def test_stored_error_band_matches_the_published_runs():
    """error_band.json is data derived from published_runs.json; regenerate it with
    ``python bench/bench_estimate.py --write-band`` whenever the formulas or the runs change."""
    import json

    from studio.estimate.calibration import BAND_FILE, bands_from

    stored = json.loads(BAND_FILE.read_text(encoding="utf-8"))
    assert stored == json.loads(json.dumps(bands_from(compare_published()))), "stale error_band.json"


def test_every_estimate_carries_its_band_and_the_cli_shows_it(capsys):
    import argparse

    from studio.cli import estimate as cli
    from studio.estimate import EstimateRequest, estimate, lookup_config

    est = estimate(EstimateRequest(config=lookup_config("qwen2.5-7b"), method="qlora"))
    assert est.band is not None and est.band.runs >= 5 and 0 < est.band.pct < 0.5
    assert est.upper_bytes == est.band.upper(est.total_bytes) > est.total_bytes
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["estimate", "model", "qwen2.5-7b", "--method", "qlora"])
    assert args.func(args) == 0
    assert f"±{est.band.pct * 100:.0f}%, {est.band.runs} published runs" in capsys.readouterr().out
