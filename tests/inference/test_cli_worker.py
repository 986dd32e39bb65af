"""The ``chat`` command line, and the worker giving the chat model's memory to an isolated job."""
from __future__ import annotations

from jobs import queue
from jobs.worker import Worker, WorkerConfig
from storage.models import JobStatus
from studio.__main__ import main
from studio.inference import service
from studio.models import SMOLLM2, TINY_QWEN_VL_SMALLVOCAB
from tests.inference.helpers import answer


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


def test_an_isolated_job_makes_the_worker_release_the_chat_model(db, tiny_vl_small_path, services):
    chat_id = service.create_chat(db, TINY_QWEN_VL_SMALLVOCAB, [], {"max_new_tokens": 2})
    answer(db, service.send_message(db, chat_id, "Hi"), services)
    engine = services.chat_engine
    assert engine.base_ref == TINY_QWEN_VL_SMALLVOCAB

    sleep_job = queue.enqueue(db, "system.sleep", {"seconds": 0.1})
    Worker(db, WorkerConfig(kinds=["system.sleep"]), services=services).run_once()

    assert queue.get(db, sleep_job).status == JobStatus.SUCCEEDED
    assert engine.base_ref is None  # unloaded before the child process started
