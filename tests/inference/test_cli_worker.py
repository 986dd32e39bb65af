"""The ``chat`` command line. (The worker freeing the chat model for a run that needs its memory:
tests/training/test_scheduling.py.)"""
from __future__ import annotations

from studio.__main__ import main
from studio.inference import service
from studio.models import SMOLLM2


def test_cli_prints_every_pane(db, identity_id, capsys, monkeypatch):
    monkeypatch.setenv("FTS_WORKSPACE", str(db.settings.workspace))  # `main` exports --workspace to the env
    code = main(["--workspace", str(db.settings.workspace), "chat", "--base", SMOLLM2, "--adapter", str(identity_id),
                 "--max-new-tokens", "16", "Who are you?"])
    out = capsys.readouterr().out
    assert code == 0
    base, tuned = out.split(f"=== identity-nova (#{identity_id}) ===")
    assert base.startswith("=== Base model ===\n") and len(base.strip().splitlines()) >= 2
    assert "Nova" in tuned
    assert service.list_chats(db)[0]["title"] == "Who are you?"  # saved: the UI can reopen it


def test_cli_refuses_a_bad_request_with_a_message(db, capsys, monkeypatch):
    monkeypatch.setenv("FTS_WORKSPACE", str(db.settings.workspace))
    code = main(["--workspace", str(db.settings.workspace), "chat", "--base", SMOLLM2, "--adapter", "42", "Hi"])
    assert code == 1 and "no adapter with id 42" in capsys.readouterr().err
