"""``python -m studio models ...`` through the real argument parser (in-process)."""
from __future__ import annotations

import json

from studio.__main__ import main
from studio.models import TINY_QWEN_VL_SMALLVOCAB
from studio.models.builtin import BUILTINS


def test_list_shows_builtins_and_whether_prepared(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FTS_MODEL_CACHE", str(tmp_path))
    assert main(["models", "list", "--json"]) == 0
    rows = {r["ref"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[TINY_QWEN_VL_SMALLVOCAB]["prepared_path"] is None
    assert rows[TINY_QWEN_VL_SMALLVOCAB]["is_test_model"] is True

    assert main(["models", "prepare", TINY_QWEN_VL_SMALLVOCAB]) == 0
    captured = capsys.readouterr()
    folder = captured.out.strip()
    assert folder == str(tmp_path / BUILTINS[TINY_QWEN_VL_SMALLVOCAB].folder_name)  # tiny-qwen2.5-vl-smallvocab-v<N>
    assert "[100%]" in captured.err  # stage lines on stderr when not a terminal

    assert main(["models", "list"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith(TINY_QWEN_VL_SMALLVOCAB))
    assert " yes " in line


def test_inspect_text_and_json(capsys):
    assert main(["models", "inspect", TINY_QWEN_VL_SMALLVOCAB]) == 0
    out = capsys.readouterr().out
    assert "vision-language" in out and "TEST MODEL" in out
    assert main(["models", "inspect", TINY_QWEN_VL_SMALLVOCAB, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["vocab_size"] == 2048 and data["config"]["vision_config"]["depth"] == 2


def test_errors_exit_1_with_a_message(tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert main(["models", "inspect", "fts-test/not-cached"]) == 1
    assert "not found locally and the Hub is unreachable" in capsys.readouterr().err
    assert main(["models", "prepare", "builtin:nope"]) == 1
    assert "built-ins are" in capsys.readouterr().err
