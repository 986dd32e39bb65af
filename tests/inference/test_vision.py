"""Images in chat with the tiny random-weight Qwen2.5-VL (replies are gibberish; the pipeline is real)."""
from __future__ import annotations

from PIL import Image
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

from storage.models import JobStatus
from studio.inference import service
from studio.models import TINY_QWEN_VL_SMALLVOCAB
from tests.inference.helpers import add_adapter, answer

CHAT_PIXELS = {"min_pixels": 28 * 28 * 4, "max_pixels": 28 * 28 * 64}
TRAINED_PIXELS = {"min_pixels": 28 * 28 * 4, "max_pixels": 28 * 28 * 16}  # what the adapter's run used
SETTINGS = {"temperature": 0.0, "max_new_tokens": 6, **CHAT_PIXELS}


def image_tokens(path, pixels: dict) -> int:
    """Qwen2.5-VL: one token per 28x28 patch of the resized image."""
    with Image.open(path) as im:
        h, w = smart_resize(im.height, im.width, factor=28, **pixels)
    return (h // 28) * (w // 28)


def vl_adapter(tmp_path, model_path):
    """A LoRA adapter on the tiny VL model's language layers, with non-zero (random) weights."""
    from peft import LoraConfig, get_peft_model

    from studio.models import load_model

    model = load_model(model_path, "vision-language", dtype="float32")
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(tmp_path / "vl-adapter")
    return tmp_path / "vl-adapter"


def test_image_chat_on_qwen25_vl_uses_the_image_tokens_and_adapter_bounds(db, sample_data, tiny_vl_small_path,
                                                                         tmp_path, services):
    adapter_id = add_adapter(db, vl_adapter(tmp_path, tiny_vl_small_path), TINY_QWEN_VL_SMALLVOCAB, "vl-lora",
                             vision=TRAINED_PIXELS)
    chat_id = service.create_chat(db, TINY_QWEN_VL_SMALLVOCAB, [adapter_id], SETTINGS)
    images = [sample_data / "mllm_demo_data" / "1.jpg", sample_data / "mllm_demo_data" / "2.jpg"]

    first = answer(db, service.send_message(db, chat_id, "What do you see?", images), services)
    second = answer(db, service.send_message(db, chat_id, "And now, without a new picture?"), services)

    assert first["status"] == second["status"] == JobStatus.SUCCEEDED
    base, tuned = (first["panes"][k] for k in first["order"])
    assert base["state"] == tuned["state"] == "done"
    assert base["meta"]["image_tokens"] == sum(image_tokens(p, CHAT_PIXELS) for p in images)
    # The adapter pane sees the images at the resolution its run was trained with.
    assert tuned["meta"]["image_tokens"] == sum(image_tokens(p, TRAINED_PIXELS) for p in images)
    assert tuned["meta"]["image_tokens"] < base["meta"]["image_tokens"]
    # The images stay in each pane's history: the follow-up question still carries them.
    assert second["panes"]["base"]["meta"]["image_tokens"] == base["meta"]["image_tokens"]

    stored = service.get_chat(db, chat_id)["panes"][0]["messages"][0]["content"]
    paths = [p["image"] for p in stored if p["type"] == "image"]
    assert len(paths) == 2 and all(p.startswith(f"chats/{chat_id}/") and (db.workspace.root / p).is_file()
                                   for p in paths)


def test_switching_base_model_unloads_the_previous_one(db, tiny_vl_small_path, services):
    engine = services.chat_engine
    chat_id = service.create_chat(db, TINY_QWEN_VL_SMALLVOCAB, [], SETTINGS)
    answer(db, service.send_message(db, chat_id, "Hi"), services)
    unloads = engine.stats.base_unloads
    other = service.create_chat(db, str(tiny_vl_small_path), [], SETTINGS)  # same weights, another ref

    state = answer(db, service.send_message(db, other, "Hi"), services)

    assert state["status"] == JobStatus.SUCCEEDED
    assert engine.base_ref == str(tiny_vl_small_path) and engine.stats.base_unloads == unloads + 1
