"""The GGUF converter's pieces without the job: options, what is refused, llama.cpp's q/k layout
(undone exactly by transformers' reader), a Qwen2 model round trip, and the Ollama Modelfile."""
from __future__ import annotations

import json

import pytest

from studio.export import ollama, to_gguf, verify
from studio.export.options import ExportOptions, ExportOptionsError
from studio.export.to_gguf import GgufUnsupportedError

QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def test_gguf_options():
    assert ExportOptions.parse("gguf").gguf_type == "q8_0"  # the default
    assert ExportOptions.parse("gguf", gguf_type="FP16").gguf_type == "f16"
    assert ExportOptions.parse("gguf", gguf_type="bf16").label == "gguf-bf16"
    assert ExportOptions.parse("merged").label == "merged" and ExportOptions.parse("merged").gguf_type is None
    with pytest.raises(ExportOptionsError) as e:
        ExportOptions.parse("gguf", dtype="nf4", gguf_type="q4_k_m")
    assert len(e.value.problems) == 2 and "llama-quantize" in str(e.value)


def test_pre_tokenizer_names_are_the_ones_llama_cpp_knows():
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
    assert to_gguf.pre_tokenizer_name(byte_level) == "gpt-2"
    digits = {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, byte_level]}
    assert to_gguf.pre_tokenizer_name(digits) == "smollm"
    qwen = {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}},
                                                  {"type": "ByteLevel", "use_regex": False}]}
    assert to_gguf.pre_tokenizer_name(qwen) == "qwen2"
    with pytest.raises(GgufUnsupportedError, match="Metaspace"):
        to_gguf.pre_tokenizer_name({"type": "Metaspace"})
    with pytest.raises(GgufUnsupportedError, match="SentencePiece"):
        to_gguf.check_tokenizer_json({"model": {"type": "BPE", "byte_fallback": True}, "decoder": {"type": "Sequence"}})


def test_unsupported_configs_are_refused_with_the_reason():
    llama = {"architectures": ["LlamaForCausalLM"], "rope_parameters": {"rope_type": "default", "rope_theta": 1e4}}
    assert to_gguf.check_config(llama).permute_qk
    assert not to_gguf.check_config({"architectures": ["Qwen2ForCausalLM"]}).permute_qk
    with pytest.raises(GgufUnsupportedError, match="'llama3' rope scaling"):
        to_gguf.check_config({**llama, "rope_parameters": {"rope_type": "llama3", "factor": 32.0}})
    with pytest.raises(GgufUnsupportedError, match="mmproj"):
        to_gguf.check_config({"architectures": ["Qwen2_5_VLForConditionalGeneration"], "vision_config": {}})
    with pytest.raises(GgufUnsupportedError, match="GPT2LMHeadModel"):
        to_gguf.check_config({"architectures": ["GPT2LMHeadModel"]})


@pytest.mark.parametrize("n_head,n_kv", [(9, 3), (4, 4)])
def test_llama_qk_permutation_is_what_the_transformers_reader_undoes(n_head, n_kv):
    import numpy as np
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    head_dim = 8
    q = np.random.default_rng(0).standard_normal((n_head * head_dim, 24)).astype(np.float32)
    k = np.random.default_rng(1).standard_normal((n_kv * head_dim, 24)).astype(np.float32)
    reader = LlamaTensorProcessor(config={"num_attention_heads": n_head, "num_key_value_heads": n_kv})
    assert not np.array_equal(to_gguf._permute(q, n_head, n_head), q)
    assert np.array_equal(reader.process(to_gguf._permute(q, n_head, n_head), "blk.0.attn_q.weight").weights, q)
    assert np.array_equal(reader.process(to_gguf._permute(k, n_head, n_kv), "blk.0.attn_k.weight").weights, k)


@pytest.mark.parametrize("gguf_type", ["f16", "bf16"])
def test_qwen2_round_trip(tmp_path, tiny_vl_small_path, gguf_type):
    """A small random Qwen2 text model with a Qwen2.5-style tokenizer (the test model's 2k-token BPE
    with Qwen's pre-tokenizer and special tokens; the embedding has 16 more rows than tokens, as
    Qwen's does, and those ids become [PADn]): biases kept, no q/k permutation, the qwen2
    pre-tokenizer, and the GGUF read back by transformers gives the same logits and prompt ids.
    (The full 151k vocabulary works the same but takes ~2 minutes to write and read on a CPU.)"""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_vl_small_path)
    config = Qwen2Config(vocab_size=len(tokenizer) + 16, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True, dtype="float32")
    model = AutoModelForCausalLM.from_config(config).eval()
    src = tmp_path / "qwen2"
    model.save_pretrained(src)
    tokenizer.save_pretrained(src)
    (tmp_path / "out").mkdir()
    summary = to_gguf.write(src, tmp_path / "out" / "m.gguf", gguf_type, name="tiny qwen2")
    assert summary["architecture"] == "qwen2" and summary["tokenizer_pre"] == "qwen2"
    assert summary["tensor_types"]["F32"] == 1 + 2 * (2 + 3)  # output norm; per layer 2 norms + q/k/v biases

    import gguf

    fields = gguf.GGUFReader(tmp_path / "out" / "m.gguf").fields
    assert fields["tokenizer.ggml.add_bos_token"].contents() is False  # Qwen's template writes its own tokens
    assert fields["tokenizer.ggml.pre"].contents() == "qwen2"
    field = fields["tokenizer.ggml.tokens"]
    assert len(field.data) == config.vocab_size
    assert bytes(field.parts[field.data[-1]]).decode() == f"[PAD{config.vocab_size - 1}]"
    studio = AutoTokenizer.from_pretrained(src)
    reread = AutoTokenizer.from_pretrained(tmp_path / "out", gguf_file="m.gguf")
    tokens = verify.compare_tokenizers(studio, reread)
    assert tokens["mismatches"] == [] and tokens["same_chat_template"]
    ids = [verify.chat_ids(studio, c) for c in verify.gguf_conversations()[:5]]
    gguf_model = AutoModelForCausalLM.from_pretrained(tmp_path / "out", gguf_file="m.gguf", dtype=torch.float32)
    result = verify.compare_gguf(verify.gguf_logits(model, ids), verify.gguf_logits(gguf_model.eval(), ids), gguf_type)
    assert all(result["checks"].values()), result


def test_modelfile_for_chatml_with_default_system(smollm2_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_path)
    detected = ollama.detect_format(tokenizer)
    assert detected.format.name == "chatml"
    assert detected.default_system == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    text, info = ollama.modelfile("m.gguf", tokenizer, "Answer like a pirate.")
    assert 'SYSTEM """Answer like a pirate."""' in text and info["system_source"] == "run"
    assert text.startswith("# Ollama Modelfile") and "FROM ./m.gguf\n" in text


def test_modelfile_without_a_translatable_template_leaves_template_out(smollm2_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_path)
    tokenizer.chat_template = "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}### assistant:"
    text, info = ollama.modelfile("m.gguf", tokenizer, None)
    assert "TEMPLATE" not in text.replace("# No TEMPLATE", "") and info["chat_format"] is None
    assert "SYSTEM" not in text and 'PARAMETER stop "<|im_end|>"' in text  # the eos token still stops


def test_shared_system_prompt_of_the_training_rows(tmp_path):
    def rows(*firsts):
        path = tmp_path / "train.jsonl"
        path.write_text("".join(json.dumps({"messages": [f, {"role": "user", "content": "hi"}]}) + "\n" for f in firsts))
        return path

    system = {"role": "system", "content": [{"type": "text", "text": "Be kind."}]}
    assert ollama.shared_system_prompt(rows(system, system)) == "Be kind."
    assert ollama.shared_system_prompt(rows(system, {"role": "system", "content": "Be brief."})) is None
    assert ollama.shared_system_prompt(rows(system, {"role": "user", "content": "x"})) is None
    assert ollama.shared_system_prompt(tmp_path / "missing.jsonl") is None
