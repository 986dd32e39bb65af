"""Side-by-side chat with the real SmolLM2 and a LoRA adapter really trained on identity data."""
from __future__ import annotations

import time

import pytest

from jobs import queue
from storage.models import JobStatus
from studio.inference import service
from studio.inference.errors import ChatBusyError
from studio.models import SMOLLM2
from tests.inference.helpers import Background, answer, wait_until

GREEDY = {"temperature": 0.0, "repetition_penalty": 1.0, "max_new_tokens": 24, "seed": 7}


def test_adapter_answers_differently_and_base_pane_equals_the_base_model_alone(db, identity_id, smollm2_path, services):
    chat_id = service.create_chat(db, SMOLLM2, [identity_id], GREEDY)
    state = answer(db, service.send_message(db, chat_id, "Who are you?"), services)

    assert state["status"] == JobStatus.SUCCEEDED and state["done"]
    base, tuned = (state["panes"][k]["text"] for k in state["order"])
    assert "Nova" in tuned and "Nova" not in base
    assert base == _base_model_alone(smollm2_path, "Who are you?", max_new_tokens=GREEDY["max_new_tokens"])


def _base_model_alone(path, prompt: str, max_new_tokens: int) -> str:
    """The same question to a second copy of the base model, loaded on its own without peft."""
    import torch

    from studio.models import load_model, load_tokenizer_or_processor

    tokenizer = load_tokenizer_or_processor(path, "text")
    model = load_model(path, "text", dtype="float32").eval()
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                           return_dict=True, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def test_one_base_load_for_a_whole_session_and_each_pane_keeps_its_history(db, identity_id, fresh_services):
    services = fresh_services  # a new worker's: loads are counted from zero
    chat_id = service.create_chat(db, SMOLLM2, [identity_id], {**GREEDY, "max_new_tokens": 12})
    questions = ["Who are you?", "What is the capital of France?", "Thanks!"]
    for q in questions:
        state = answer(db, service.send_message(db, chat_id, q), services)
        assert all(p["state"] == "done" for p in state["panes"].values()), state

    stats = services.chat_engine.stats
    assert (stats.base_loads, stats.adapter_loads, stats.generations) == (1, 1, 6)

    reopened = service.get_chat(db, chat_id)  # as the UI shows it after a restart
    assert reopened["pending_job_id"] is None
    for pane in reopened["panes"]:
        users = [m for m in pane["messages"] if m["role"] == "user"]
        replies = [m for m in pane["messages"] if m["role"] == "assistant"]
        assert [u["content"][0]["text"] for u in users] == questions
        assert len(replies) == 3 and all(r["meta"]["error"] is None for r in replies)
    base, tuned = reopened["panes"]
    assert [m["content"] for m in base["messages"][1::2]] != [m["content"] for m in tuned["messages"][1::2]]
    assert service.list_chats(db, kind="chat")[0]["id"] == chat_id


def test_tokens_stream_into_the_database_while_generating(db, services):
    chat_id = service.create_chat(db, SMOLLM2, [], {**GREEDY, "max_new_tokens": 40})
    job_id = service.send_message(db, chat_id, "Describe the sea in three sentences.")
    seen: list[str] = []
    with Background(db, job_id, services):
        def finished():
            pane = service.poll(db, job_id)["panes"]["base"]
            if pane["text"] and (not seen or seen[-1] != pane["text"]):
                seen.append(pane["text"])
            return service.poll(db, job_id)["done"]
        wait_until(finished, timeout=120)
    final = service.poll(db, job_id)["panes"]["base"]["text"]
    partial = [t for t in seen if t != final]
    assert len(partial) >= 3, seen  # several intermediate states reached the database
    assert all(final.startswith(t) for t in partial)


def test_stop_ends_generation_quickly_and_keeps_the_partial_answer(db, identity_id, services):
    chat_id = service.create_chat(db, SMOLLM2, [identity_id], {"temperature": 0.8, "max_new_tokens": 2000, "seed": 1})
    job_id = service.send_message(db, chat_id, "Count from 1 to 500, separated by commas.")
    with Background(db, job_id, services) as bg:
        wait_until(lambda: len(service.poll(db, job_id)["panes"]["base"]["text"]) > 10, timeout=120)
        with pytest.raises(ChatBusyError):
            service.send_message(db, chat_id, "too early")
        asked = time.monotonic()
        service.stop(db, job_id)
        wait_until(lambda: service.poll(db, job_id)["done"], timeout=30)
        took = time.monotonic() - asked
    assert took < 1.0, f"generation went on for {took:.2f}s after stop"
    assert bg.outcome.status == JobStatus.CANCELLED
    state = service.poll(db, job_id)
    base, tuned = (state["panes"][k] for k in state["order"])
    assert base["state"] == "stopped" and base["text"]
    assert tuned["state"] == "error" and "stopped" in tuned["error"]

    pane = service.get_chat(db, chat_id)["panes"][0]
    assert pane["messages"][-1]["meta"]["stopped"] and pane["messages"][-1]["content"][0]["text"] == base["text"]
    service.update_settings(db, chat_id, {"max_new_tokens": 8})
    after = answer(db, service.send_message(db, chat_id, "Say hi."), services)  # the engine keeps serving
    assert after["status"] == JobStatus.SUCCEEDED and after["panes"]["base"]["text"]


def test_a_queued_message_says_it_waits_for_the_training_run(db):
    train_job = queue.enqueue(db, "train", {"run_id": 1})
    assert queue.claim_job(db, train_job, "other-worker") is not None  # a training run holds the GPU
    chat_id = service.create_chat(db, SMOLLM2, [], GREEDY)
    job_id = service.send_message(db, chat_id, "Hello?")

    state = service.poll(db, job_id)
    assert state["status"] == JobStatus.QUEUED and not state["done"]
    assert state["message"] == "waiting: a training run is using the GPU"
    assert state["panes"]["base"]["state"] == "waiting"

    assert service.stop(db, job_id) == JobStatus.CANCELLED  # stopping a queued message frees the chat
    assert service.get_chat(db, chat_id)["pending_job_id"] is None
    service.send_message(db, chat_id, "Hello again?")


def test_a_chat_that_does_not_fit_beside_a_run_shows_the_workers_reason(db):
    from jobs.devices import CPU, Device
    from jobs.worker import Worker, WorkerConfig

    chat_id = service.create_chat(db, SMOLLM2, [], GREEDY)
    job_id = service.send_message(db, chat_id, "Hello?")
    worker = Worker(db, WorkerConfig(devices=[Device(CPU, 0, 200 * 2 ** 20)]))  # less than SmolLM2 needs

    assert worker.schedule() == []

    state = service.poll(db, job_id)
    assert state["status"] == JobStatus.QUEUED
    assert state["message"].startswith("waiting for the CPU: needs ") and "can never fit there" in state["message"]
