"""Tiny Qwen2.5-VL test models: real processor + model path on a real image (random weights)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from studio.models import TINY_QWEN_VL_SMALLVOCAB, inspect, load_model, load_tokenizer_or_processor, prepare
from studio.models.tiny_qwen_vl import MAX_PIXELS

IMAGE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mllm_demo_data" / "1.jpg"


@pytest.fixture(scope="module")
def image():
    from PIL import Image

    if not IMAGE.is_file():
        pytest.skip(f"test image not found at {IMAGE}")
    return Image.open(IMAGE).convert("RGB")


def _inputs(processor, image):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]},
                {"role": "assistant", "content": [{"type": "text", "text": "Two people."}]}]
    text = processor.apply_chat_template(messages, tokenize=False)
    return processor(text=[text], images=[image], return_tensors="pt")


@pytest.mark.parametrize("fixture", ["tiny_vl_small_path", "tiny_vl_path"])
def test_processor_and_model_train_and_generate_on_a_real_image(fixture, request, image):
    path = request.getfixturevalue(fixture)
    info = inspect(path)
    processor = load_tokenizer_or_processor(path, info.kind)
    model = load_model(path, info.kind, dtype="float32")
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"

    batch = _inputs(processor, image)
    grid = batch["image_grid_thw"][0]
    assert int(grid[1] * grid[2]) * 14 * 14 <= MAX_PIXELS  # small default pixel budget
    image_tokens = int((batch["input_ids"] == model.config.image_token_id).sum())
    assert image_tokens == int(grid.prod()) // 4  # one token per 2x2 merged patch

    out = model(**batch, labels=batch["input_ids"])
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.model.visual.patch_embed.proj.weight.grad.abs().sum() > 0  # gradient reaches the vision tower

    model.eval()
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}],
        tokenize=False, add_generation_prompt=True)
    gen_inputs = processor(text=[prompt], images=[image], return_tensors="pt")
    with torch.no_grad():
        generated = model.generate(**gen_inputs, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] > gen_inputs["input_ids"].shape[1]


def test_bf16_load_runs_a_forward(tiny_vl_small_path, image):
    processor = load_tokenizer_or_processor(tiny_vl_small_path, "vision-language")
    model = load_model(tiny_vl_small_path, "vision-language", dtype="bf16")
    assert model.dtype == torch.bfloat16
    batch = _inputs(processor, image)
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape[-1] == 2048 and torch.isfinite(logits.float()).all()


def test_weights_are_reproducible(tmp_path, tiny_vl_small_path):
    from safetensors.torch import load_file

    rebuilt = prepare(TINY_QWEN_VL_SMALLVOCAB, cache_dir=tmp_path)
    a, b = load_file(tiny_vl_small_path / "model.safetensors"), load_file(rebuilt / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_processor_loads_with_plain_auto_classes(tiny_vl_small_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_vl_small_path)
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    assert processor.image_processor.size["longest_edge"] == MAX_PIXELS
    model = AutoModelForImageTextToText.from_pretrained(tiny_vl_small_path)
    assert model.generation_config.eos_token_id == [2028, 2026]  # <|im_end|>, <|endoftext|>


def test_quantization_config_is_passed_through(tiny_vl_small_path):
    """QLoRA's path: a bitsandbytes 4-bit config reaches from_pretrained (bnb runs on CPU too)."""
    pytest.importorskip("bitsandbytes")
    from bitsandbytes.nn import Linear4bit
    from transformers import BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
                               llm_int8_skip_modules=["model.visual", "lm_head"])  # see PLATFORM.md
    model = load_model(tiny_vl_small_path, "vision-language", dtype="bf16", quantization_config=quant)
    assert isinstance(model.model.language_model.layers[0].self_attn.q_proj, Linear4bit)
    assert not isinstance(model.model.visual.blocks[0].attn.qkv, Linear4bit)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_loads_on_cuda_in_bf16(tiny_vl_small_path, image):
    processor = load_tokenizer_or_processor(tiny_vl_small_path, "vision-language")
    model = load_model(tiny_vl_small_path, "vision-language", dtype="bfloat16", device_map="cuda:0")
    assert model.device.type == "cuda" and model.dtype == torch.bfloat16
    batch = _inputs(processor, image).to("cuda:0")
    with torch.no_grad():
        assert torch.isfinite(model(**batch).logits.float()).all()
