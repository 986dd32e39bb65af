"""``python -m studio estimate ...`` through the module's own register()."""
from __future__ import annotations

import argparse
import json

from studio.cli import estimate as cli


def run(argv, capsys):
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code = args.func(args)
    return code, capsys.readouterr().out


def test_model_breakdown_with_verdict(capsys):
    code, out = run(["estimate", "model", "qwen2.5-7b", "--method", "lora", "--batch", "1", "--seq", "2048",
                     "--gpu", "4090"], capsys)
    assert code == 0
    assert "base_weights" in out and "total" in out and "on RTX 4090 24 GB" in out


def test_model_json(capsys):
    code, out = run(["estimate", "model", "smollm2-135m", "--json", "--gpu", "8GB"], capsys)
    data = json.loads(out)
    assert code == 0 and data["total_bytes"] == sum(data["parts"].values()) and data["gpu"]["verdict"] == "fits"


def test_inference_and_unknown_model(capsys):
    assert run(["estimate", "model", "llama-3.1-8b", "--inference", "--seq", "8192"], capsys)[0] == 0
    code, out = run(["estimate", "model", "nope-13b"], capsys)
    assert code == 2 and "error" in out


def test_published_and_lists(capsys):
    code, out = run(["estimate", "published"], capsys)
    assert code == 0 and "within 15%" in out
    assert "Qwen/Qwen2.5-VL-7B-Instruct" in run(["estimate", "models"], capsys)[1]
    assert "H200 141 GB" in run(["estimate", "cards"], capsys)[1]
