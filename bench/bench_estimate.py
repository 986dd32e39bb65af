"""Estimator timing, its agreement with published measurements, and its error band.

    python bench/bench_estimate.py               # timing + published-runs table + error per source
    python bench/bench_estimate.py --write-band  # also rewrite studio/estimate/error_band.json

Targets: estimating a 7B model at seq 2048 takes well under a second (it is pure arithmetic; the
UI calls it on every widget change); on the comparable published runs >= 80% within 15% and a
mean absolute error <= 10%, with no per-run tuning. The error band every estimate carries (and the
verdict uses) is computed here from the same comparisons and stored as data.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

t0 = time.perf_counter()
from studio.estimate import EstimateRequest, estimate, find_card, lookup_config, suggestions  # noqa: E402
from studio.estimate.calibration import BAND_FILE, bands_from  # noqa: E402
from studio.estimate.published import (compare_published, error_by_source, format_table, source_of,  # noqa: E402
                                       summary)

IMPORT_S = time.perf_counter() - t0


def timed(fn, repeat: int) -> float:
    fn()  # warm the config cache
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t) / repeat


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-band", action="store_true", help=f"rewrite {BAND_FILE.name} from the comparisons")
    args = parser.parse_args(argv)
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
    comparisons = compare_published()
    print(format_table(comparisons))
    print()
    print(f"{'source':28} {'runs':>4} {'within 15%':>10} {'mean |error|':>12} {'mean error':>10} {'not counted':>11}")
    for source, s in error_by_source(comparisons).items():
        skipped = sum(1 for c in comparisons if source_of(c.run) == source and not c.comparable)
        print(f"{source:28} {s['runs']:>4} {s['within']:>10} {s['mae'] * 100:>11.1f}% {s['bias'] * 100:>+9.1f}% "
              f"{skipped:>11}")
    total = summary(comparisons)
    print(f"{'all comparable':28} {total['runs']:>4} {total['within']:>10} {total['mae'] * 100:>11.1f}% "
          f"{total['bias'] * 100:>+9.1f}% {sum(not c.comparable for c in comparisons):>11}"
          f"   (target: >= 80% within 15%, mean |error| <= 10%)")
    bands = bands_from(comparisons)
    print("error band: " + "; ".join(f"{k}: {v['text']}" for k, v in bands.items()))
    if args.write_band:
        BAND_FILE.write_text(json.dumps(bands, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {BAND_FILE}")
    return 0 if one < 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
