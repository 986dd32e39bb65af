"""Estimator timing and its agreement with published measurements.

    python bench/bench_estimate.py

Target: estimating a 7B model at seq 2048 takes well under a second (it is pure arithmetic; the
UI calls it on every widget change). Also prints the published-runs comparison table.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

t0 = time.perf_counter()
from studio.estimate import EstimateRequest, estimate, find_card, lookup_config, suggestions  # noqa: E402
from studio.estimate.published import compare_published, format_table  # noqa: E402

IMPORT_S = time.perf_counter() - t0


def timed(fn, repeat: int) -> float:
    fn()  # warm the config cache
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t) / repeat


def main() -> int:
    req = EstimateRequest(config=lookup_config("qwen2.5-7b"), method="lora", seq_len=2048, batch_size=1)
    one = timed(lambda: estimate(req), 200)
    cap = find_card("4090").capacity_bytes
    big = req.with_(batch_size=4, seq_len=4096)
    sugg = timed(lambda: suggestions(big, cap), 5)
    print(f"import studio.estimate:                     {IMPORT_S * 1000:8.2f} ms")
    print(f"estimate Qwen2.5-7B LoRA, seq 2048:         {one * 1000:8.3f} ms   (target: well under 1 s)")
    print(f"suggestions for a run that does not fit:    {sugg * 1000:8.2f} ms")
    print(f"  -> {estimate(req).total_gib:.2f} GiB at seq 2048; batch 4 x 4096 on a 4090: "
          f"{len(suggestions(big, cap))} suggestions")
    print()
    print(format_table(compare_published()))
    return 0 if one < 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
