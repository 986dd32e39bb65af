"""The UI-facing service: validation before anything is queued, and no torch in the UI process."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from jobs import queue
from studio.inference import service
from studio.inference.errors import ChatBusyError, ChatError
from studio.inference.settings import SettingsError
from studio.models import SMOLLM2
from tests.inference.helpers import add_adapter

ROOT = Path(__file__).resolve().parents[2]


def test_the_ui_side_never_imports_torch():
    code = ("import sys; import studio.inference, studio.inference.service, studio.inference.settings; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_requests_are_checked_before_anything_is_queued(db, tmp_path):
    ids = [add_adapter(db, None, SMOLLM2, f"a{i}", rel_path=f"runs/x{i}/adapter") for i in range(4)]
    with pytest.raises(ChatError, match="at most 3"):
        service.create_chat(db, SMOLLM2, ids)
    with pytest.raises(ChatError, match="no adapter with id 99"):
        service.create_chat(db, SMOLLM2, [99])
    with pytest.raises(ChatError, match="twice"):
        service.create_chat(db, SMOLLM2, [ids[0], ids[0]])
    with pytest.raises(ChatError, match="not a model reference"):
        service.create_chat(db, "no such thing", [])
    with pytest.raises(SettingsError, match="temperature.*top_k"):
        service.create_chat(db, SMOLLM2, [], {"temperature": -1, "top_k": -5})

    chat_id = service.create_chat(db, SMOLLM2, ids[:3])
    with pytest.raises(ChatError, match="empty"):
        service.send_message(db, chat_id, "  ")
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("hello")
    with pytest.raises(ChatError, match="not a readable image"):
        service.send_message(db, chat_id, "look", [not_an_image])
    assert queue.list_jobs(db) == []

    job_id = service.send_message(db, chat_id, "hello")
    with pytest.raises(ChatBusyError, match=f"job {job_id}"):
        service.send_message(db, chat_id, "hello again")
    assert [p["key"] for p in service.get_chat(db, chat_id)["panes"]] == ["base"] + [f"adapter-{i}" for i in ids[:3]]
    assert service.get_chat(db, chat_id)["pending_message"]["content"] == [{"type": "text", "text": "hello"}]


def test_settings_updates_and_deleting_a_chat(db):
    chat_id = service.create_chat(db, SMOLLM2, [], {"temperature": 0.3})
    assert service.update_settings(db, chat_id, {"top_p": 0.5})["temperature"] == 0.3
    job_id = service.send_message(db, chat_id, "hi")
    service.delete_chat(db, chat_id)
    assert queue.get(db, job_id).status == "cancelled"
    with pytest.raises(ChatError, match="does not exist"):
        service.get_chat(db, chat_id)
    with pytest.raises(ChatError, match="no prompts"):
        service.create_compare(db, SMOLLM2, [], ["", "  "])
