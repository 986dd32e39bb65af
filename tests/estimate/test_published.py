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
