"""The estimate for the user's own data: the longest batch that really occurs, beside the worst
case at the cut-off. Token statistics are computed by the studio's own code with the real
SmolLM2 tokenizer on real Alpaca rows."""
from __future__ import annotations

import argparse
import json

import pytest

from studio.cli import estimate as cli
from studio.estimate import EstimateRequest, TokenLengths, estimate, estimate_for_data, lookup_config

CUTOFF = 2048


def rows_from_alpaca(path, n, join=1):
    """Canonical chat rows; ``join`` answers concatenated per row make long rows."""
    alpaca = json.loads(path.read_text(encoding="utf-8"))
    for i in range(n):
        group = alpaca[i * join:(i + 1) * join]
        answer = "\n\n".join(r["output"] for r in group)
        yield {"messages": [{"role": "user", "content": [{"type": "text", "text": group[0]["instruction"]}]},
                            {"role": "assistant", "content": [{"type": "text", "text": answer}]}]}


@pytest.fixture(scope="module")
def tokenizer(smollm2_path):
    from studio.models.loading import load_tokenizer_or_processor

    return load_tokenizer_or_processor(smollm2_path, "text")


@pytest.fixture(scope="module")
def short_stats(tokenizer, shared_data):
    from studio.datasets.stats import compute_statistics

    return compute_statistics(rows_from_alpaca(shared_data / "alpaca_en_demo.json", 200), tokenizer,
                              cutoff_len=CUTOFF)


@pytest.fixture(scope="module")
def long_stats(tokenizer, shared_data):
    from studio.datasets.stats import compute_statistics

    return compute_statistics(rows_from_alpaca(shared_data / "alpaca_en_demo.json", 40, join=25), tokenizer,
                              cutoff_len=CUTOFF)


def spec(**kw) -> EstimateRequest:
    return EstimateRequest(config=lookup_config("qwen2.5-1.5b"), **{"method": "lora", "batch_size": 4,
                                                                    "seq_len": CUTOFF, **kw})


def test_short_rows_estimate_lower_than_the_cutoff(short_stats):
    assert short_stats.max_tokens < CUTOFF  # real Alpaca rows are far shorter than 2048 tokens
    at_cutoff = estimate(spec())
    mine = estimate_for_data(spec(), short_stats)
    assert mine.total_bytes < at_cutoff.total_bytes
    assert mine.worst_case_bytes == at_cutoff.total_bytes
    assert mine.rows_cut == 0 and mine.data_rows == 200
    # the data's longest batch: 4 rows padded to the longest row
    assert mine.total_bytes == estimate(spec(batch_size=4, seq_len=short_stats.max_tokens)).total_bytes


def test_a_row_reaching_the_cutoff_gives_the_cutoff_estimate(long_stats):
    assert long_stats.max_tokens >= CUTOFF and long_stats.rows_over_cutoff > 0
    mine = estimate_for_data(spec(), long_stats)
    assert mine.total_bytes == mine.worst_case_bytes == estimate(spec()).total_bytes
    assert mine.rows_cut == long_stats.rows_over_cutoff and mine.rows_cut_exact


def test_padding_free_counts_the_longest_rows_sum(short_stats):
    data = TokenLengths.from_stats(short_stats.to_dict())
    padded = estimate_for_data(spec(), data)
    free = estimate_for_data(spec(padding_free=True), data)
    longest = data.longest_rows(4, CUTOFF)
    assert longest[0] == short_stats.max_tokens and len(longest) == 4 and sorted(longest, reverse=True) == longest
    assert free.total_bytes <= padded.total_bytes  # no padding: at most 4 x the longest row
    # packing fills every row to the cut-off: the data no longer lowers the peak (the dataset is big enough)
    packed = estimate_for_data(spec(packing=True, padding_free=True), data)
    assert packed.total_bytes == packed.worst_case_bytes


def test_rows_cut_at_another_cutoff_come_from_the_histogram(long_stats):
    data = TokenLengths.from_stats(long_stats.to_dict())
    assert data.rows_over(CUTOFF) == (long_stats.rows_over_cutoff, True)
    fewer, exact = data.rows_over(long_stats.max_tokens - 1)
    assert not exact and 1 <= fewer <= long_stats.rows_over_cutoff
    assert data.rows_over(long_stats.max_tokens) == (0, True)


def test_bad_statistics_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="max_tokens"):
        TokenLengths.from_stats({"rows": 3})
    with pytest.raises(ValueError, match="no rows"):
        TokenLengths.from_stats({"rows": 0, "max_tokens": 0})


def run_cli(argv, capsys):
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args), capsys.readouterr().out


def test_cli_json_for_data_keeps_its_keys(short_stats, tmp_path, capsys):
    path = tmp_path / "stats.json"
    path.write_text(json.dumps(short_stats.to_dict()), encoding="utf-8")
    base = ["estimate", "model", "qwen2.5-1.5b", "--batch", "4", "--seq", str(CUTOFF), "--json", "--gpu", "24GB"]
    code, out = run_cli(base + ["--stats", str(path)], capsys)
    data = json.loads(out)
    assert code == 0 and data["total_bytes"] == sum(data["parts"].values())
    assert data["total_bytes"] < data["worst_case_bytes"] and data["data"]["rows_cut"] == 0
    code, out = run_cli(base, capsys)
    assert json.loads(out)["total_bytes"] == data["worst_case_bytes"]
    code, out = run_cli(base + ["--stats", str(tmp_path / "missing.json")], capsys)
    assert code == 2 and "missing.json" in out


def test_cli_dataset_without_statistics_says_what_to_do(db, capsys):
    from studio.datasets.service import import_dataset

    src = db.workspace.root / "tiny.jsonl"
    src.write_text("\n".join(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                                      {"role": "assistant", "content": "hello"}]})
                             for _ in range(3)), encoding="utf-8")
    dataset = import_dataset(db, src).dataset
    code, out = run_cli(["estimate", "model", "qwen2.5-1.5b", "--dataset", str(dataset.id)], capsys)
    assert code == 2 and "no token statistics" in out and "Datasets tab" in out
    code, out = run_cli(["estimate", "model", "qwen2.5-1.5b", "--dataset", "999"], capsys)
    assert code == 2 and "999" in out
