"""Loss only on assistant turns (labels -100 elsewhere), and cut-offs never inside an image."""
from __future__ import annotations

from studio.datasets import read_canonical
from studio.models import load_tokenizer_or_processor
from studio.training.data import IGNORE, VisionCollator, VisionEncoder, encode_text_rows
from studio.spec import VisionSettings

CONVERSATION = {"messages": [
    {"role": "system", "content": [{"type": "text", "text": "You are terse."}]},
    {"role": "user", "content": [{"type": "text", "text": "Capital of France?"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "Paris."}]},
    {"role": "user", "content": [{"type": "text", "text": "And of Italy?"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "Rome."}]},
]}


def labelled_text(tokenizer, ids, labels) -> str:
    return tokenizer.decode([t for t, lab in zip(ids, labels) if lab != IGNORE])


def test_text_labels_cover_exactly_the_assistant_answers(smollm2_path):
    tok = load_tokenizer_or_processor(smollm2_path, "text")
    cols, stats = encode_text_rows([CONVERSATION], tok, cutoff=512)
    ids, labels = cols["input_ids"][0], cols["labels"][0]
    assert tok.decode(ids) == tok.apply_chat_template(
        [{"role": m["role"], "content": m["content"][0]["text"]} for m in CONVERSATION["messages"]], tokenize=False)
    # Each answer with its end-of-turn token (the model must learn to stop); nothing of the prompts.
    assert labelled_text(tok, ids, labels) == "Paris.<|im_end|>\nRome.<|im_end|>\n"
    assert labels[: ids.index(tok.convert_tokens_to_ids("<|im_start|>"))] == [] or labels[0] == IGNORE
    assert stats.kept == 1 and stats.truncated == 0


def test_text_cutoff_truncates_and_drops_rows_without_an_answer(smollm2_path):
    tok = load_tokenizer_or_processor(smollm2_path, "text")
    cols, stats = encode_text_rows([CONVERSATION], tok, cutoff=40)
    assert len(cols["input_ids"][0]) == 40 and stats.truncated == 1
    cols, stats = encode_text_rows([CONVERSATION], tok, cutoff=20)  # the system prompt alone fills it
    assert cols["input_ids"] == [] and stats.dropped_no_answer == 1


def test_vision_labels_mask_prompts_and_image_tokens(db, mllm_id, tiny_vl_small_path):
    processor = load_tokenizer_or_processor(tiny_vl_small_path, "vision-language")
    encoder = VisionEncoder(processor, VisionSettings(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 64), cutoff=512)
    rows = list(read_canonical(db, mllm_id))
    cols, stats = encoder.prepare(rows)
    assert stats.kept == len(rows) == 6
    batch = VisionCollator(encoder)([{k: cols[k][i] for k in cols} for i in range(3)])
    tok = processor.tokenizer
    image_id = tok.convert_tokens_to_ids("<|image_pad|>")
    for i, row in enumerate(rows[:3]):
        ids, labels = batch["input_ids"][i].tolist(), batch["labels"][i].tolist()
        answers = [m["content"][0]["text"] for m in row["messages"] if m["role"] == "assistant"]
        assert labelled_text(tok, ids, labels) == "".join(f"{a}<|im_end|>\n" for a in answers)
        assert all(lab == IGNORE for t, lab in zip(ids, labels) if t == image_id)
    # every image placeholder token has its features: counts match the grid the processor made
    n_image_tokens = int((batch["input_ids"] == image_id).sum())
    assert n_image_tokens == int(batch["image_grid_thw"].prod(-1).sum()) // 4


def test_vision_rows_never_cut_inside_an_image(db, mllm_id, tiny_vl_small_path):
    processor = load_tokenizer_or_processor(tiny_vl_small_path, "vision-language")
    rows = list(read_canonical(db, mllm_id))
    # 64 tokens per image at this size: a cut-off of 100 fits one image, not two
    encoder = VisionEncoder(processor, VisionSettings(min_pixels=28 * 28 * 64, max_pixels=28 * 28 * 64), cutoff=100)
    cols, stats = encoder.prepare(rows)
    assert stats.dropped_image_cut >= 1 and stats.kept >= 1
    batch = VisionCollator(encoder)([{k: cols[k][i] for k in cols} for i in range(stats.kept)])
    image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    end_id = processor.tokenizer.convert_tokens_to_ids("<|vision_end|>")
    assert batch["input_ids"].shape[1] <= 100
    for ids in batch["input_ids"].tolist():
        assert ids.count(end_id) == ids.count(processor.tokenizer.convert_tokens_to_ids("<|vision_start|>"))
    assert int((batch["input_ids"] == image_id).sum()) == int(batch["image_grid_thw"].prod(-1).sum()) // 4


def test_training_statistics_and_chat_render_a_row_alike_tools_included(tiny_vl_small_path):
    """One renderer (studio.datasets.render): the token histogram measures what trains, and a chat
    prompt is the training prompt; a row's tool definitions reach the template in both."""
    from transformers import AutoTokenizer

    from studio.datasets import stats
    from studio.datasets.render import render, template_messages

    tokenizer = AutoTokenizer.from_pretrained(tiny_vl_small_path)
    tokenizer.chat_template = (
        "{% if tools %}TOOLS {{ tools | tojson }}\n{% endif %}{% for m in messages %}<|im_start|>{{ m.role }}\n"
        "{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    row = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Weather in Oslo?"}]},
                        {"role": "assistant", "content": [{"type": "text", "text": "Cold."}]}], "tools": tools}
    cols, _ = encode_text_rows([row], tokenizer, cutoff=512)
    text = stats.render(row, tokenizer, "<|image_pad|>")
    assert "TOOLS" in text and "get_weather" in text
    assert cols["input_ids"][0] == tokenizer(text, add_special_tokens=False)["input_ids"]
    prompt = render(tokenizer, template_messages(row["messages"][:1], vision=False), tools=tools, generation_prompt=True)
    assert text.startswith(prompt)  # chat formats the question exactly as training saw it
