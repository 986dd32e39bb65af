"""Bad requests give a clear message in their pane; the engine keeps serving the others and the
next message."""
from __future__ import annotations

import pytest

from storage.models import JobStatus
from studio.inference import service
from studio.models import SMOLLM2, TINY_QWEN_VL
from tests.inference.helpers import add_adapter, answer

SHORT = {"temperature": 0.0, "repetition_penalty": 1.0, "max_new_tokens": 12}


@pytest.fixture
def tiny_llama_adapter(tmp_path):
    """A LoRA adapter whose module names match SmolLM2 (Llama) but whose layers are 64 wide, not 576."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=49152)
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    model.save_pretrained(tmp_path / "adapter")
    return tmp_path / "adapter"


def test_bad_adapters_fail_in_their_own_pane_and_the_base_pane_answers(db, identity_adapter_dir, tiny_llama_adapter, services):
    wrong_base = add_adapter(db, identity_adapter_dir, TINY_QWEN_VL, "for-another-base")
    missing = add_adapter(db, None, SMOLLM2, "deleted-folder", rel_path="runs/999/adapter")
    wrong_size = add_adapter(db, tiny_llama_adapter, SMOLLM2, "claims-smollm2")
    chat_id = service.create_chat(db, SMOLLM2, [wrong_base, missing, wrong_size], SHORT)

    state = answer(db, service.send_message(db, chat_id, "Hello!"), services)

    assert state["status"] == JobStatus.SUCCEEDED
    base, *bad = (state["panes"][k] for k in state["order"])
    assert base["state"] == "done" and base["text"]
    assert all(p["state"] == "error" and not p["text"] for p in bad)
    assert f"trained on {TINY_QWEN_VL}, not on {SMOLLM2}" in bad[0]["error"]
    assert "folder" in bad[1]["error"] and "missing" in bad[1]["error"]
    assert "does not fit this base model" in bad[2]["error"] and "576" in bad[2]["error"]
    loaded = services.chat_engine.loaded_adapters.values()  # nothing was half-loaded onto the model
    assert not [path for path in loaded if path.startswith(str(db.workspace.root))]


def test_an_image_on_a_text_model_and_an_over_long_prompt_are_explained(db, sample_data, identity_id, services):
    chat_id = service.create_chat(db, SMOLLM2, [identity_id], SHORT)

    image = answer(db, service.send_message(db, chat_id, "What is this?", [sample_data / "mllm_demo_data" / "1.jpg"]), services)
    too_long = answer(db, service.send_message(db, chat_id, "word " * 9000), services)
    fine = answer(db, service.send_message(db, chat_id, "Who are you?"), services)

    for pane in image["panes"].values():
        assert pane["state"] == "error" and "text-only model and cannot see images" in pane["error"]
    for pane in too_long["panes"].values():
        assert pane["state"] == "error" and "reads at most 8192 tokens" in pane["error"]
    # The failed turns are kept in the transcript but left out of what the model reads next.
    assert all(p["state"] == "done" for p in fine["panes"].values())
    assert "Nova" in fine["panes"][f"adapter-{identity_id}"]["text"]
    history = service.get_chat(db, chat_id)["panes"][0]["messages"]
    assert [bool(m["meta"]["error"]) for m in history if m["role"] == "assistant"] == [True, True, False]


def test_a_base_model_that_cannot_load_fails_the_job_with_its_reason(db, tmp_path, services):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama", "architectures": ["LlamaForCausalLM"]}')
    chat_id = service.create_chat(db, str(folder), [], SHORT)

    state = answer(db, service.send_message(db, chat_id, "Hello"), services)

    assert state["status"] == JobStatus.FAILED and "not a complete model folder" in state["error"]
    assert state["panes"]["base"]["state"] == "error"
    assert service.get_chat(db, chat_id)["panes"][0]["messages"][-1]["meta"]["error"]
    assert services.chat_engine.base_ref != str(folder)  # whatever was loaded before stays loaded
