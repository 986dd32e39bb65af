"""inspect / parse_ref / prepare on builtins, local folders and Hub ids: config only, clear errors."""
from __future__ import annotations

import inspect as pyinspect
import json
import shutil
import time
from pathlib import Path

import pytest

from studio.models import (
    SMOLLM2,
    TINY_QWEN_VL,
    TINY_QWEN_VL_SMALLVOCAB,
    HubUnreachableError,
    InvalidModelFolderError,
    ModelNotFoundError,
    RemoteCodeRequiredError,
    UnknownModelRefError,
    UnsupportedModelError,
    inspect,
    list_builtin,
    load_model,
    load_tokenizer_or_processor,
    parse_ref,
    prepare,
    prepared_path,
)


def test_builtins_are_described_without_preparing(tmp_path):
    started = time.time()
    infos = {i.ref: i for i in list_builtin()}
    assert set(infos) == {SMOLLM2, TINY_QWEN_VL, TINY_QWEN_VL_SMALLVOCAB}
    assert list(infos)[0] == SMOLLM2  # real model first, test models after
    for ref in infos:
        assert prepared_path(ref, cache_dir=tmp_path) is None  # nothing was built
    assert time.time() - started < 30

    smol = infos[SMOLLM2]
    assert (smol.kind, smol.source, smol.model_type) == ("text", "builtin", "llama")
    assert smol.architecture == "LlamaForCausalLM"
    assert (smol.hidden_size, smol.num_layers, smol.num_attention_heads, smol.num_kv_heads) == (576, 30, 9, 3)
    assert (smol.intermediate_size, smol.vocab_size) == (1536, 49152)
    assert 134_000_000 < smol.num_parameters < 135_000_000  # "135M", embedding tied to lm_head
    assert not smol.is_test_model and smol.trust_remote_code is False

    vl = infos[TINY_QWEN_VL]
    assert vl.kind == "vision-language" and vl.is_test_model
    assert vl.architecture == "Qwen2_5_VLForConditionalGeneration"
    assert (vl.hidden_size, vl.num_layers, vl.num_attention_heads, vl.num_kv_heads) == (64, 2, 4, 2)
    assert vl.vocab_size == 151936 and vl.config["image_token_id"] == 151655
    assert "vision_config" in vl.config and "text_config" in vl.config
    assert vl.vision["depth"] == 2 and vl.vision["patch_size"] == 14
    assert 9_000_000 < vl.num_parameters < 11_000_000
    assert "gibberish" in vl.description.lower()

    small = infos[TINY_QWEN_VL_SMALLVOCAB]
    assert small.vocab_size == 2048 and small.is_test_model and small.num_parameters < 400_000
    assert small.config["image_token_id"] == 2026 + 12


def test_inspect_returns_independent_copies():
    a = inspect(TINY_QWEN_VL_SMALLVOCAB)
    a.config["text_config"]["hidden_size"] = 1
    assert inspect(TINY_QWEN_VL_SMALLVOCAB).config["text_config"]["hidden_size"] == 64


def test_parse_ref_sources(tmp_path, monkeypatch):
    assert parse_ref(SMOLLM2).source == "builtin"
    assert parse_ref("Qwen/Qwen2.5-VL-3B-Instruct").source == "hub"
    assert parse_ref("hub:Qwen/Qwen2.5-VL-3B-Instruct@main").name == "Qwen/Qwen2.5-VL-3B-Instruct@main"
    (tmp_path / "org" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    local = parse_ref("org/name")  # an existing folder wins over a Hub id, as in from_pretrained
    assert local.source == "local" and local.name == str(tmp_path / "org" / "name")
    assert parse_ref(f"local:{tmp_path}").source == "local"
    with pytest.raises(UnknownModelRefError, match="built-ins are"):
        parse_ref("builtin:nope")
    with pytest.raises(UnknownModelRefError, match="not a model reference"):
        parse_ref("just-a-word")
    with pytest.raises(ModelNotFoundError, match="no model folder"):
        parse_ref("./missing-folder")


def test_inspect_local_folder_matches_builtin(tiny_vl_small_path):
    info = inspect(tiny_vl_small_path)
    builtin = inspect(TINY_QWEN_VL_SMALLVOCAB)
    assert info.source == "local" and info.ref == str(tiny_vl_small_path)
    assert info.kind == "vision-language" and info.display_name == tiny_vl_small_path.name
    assert info.num_parameters == builtin.num_parameters
    assert (info.hidden_size, info.vocab_size, info.num_layers) == (builtin.hidden_size, builtin.vocab_size, 2)


def test_local_folder_validation_names_what_is_missing(tmp_path, tiny_vl_small_path):
    folder = tmp_path / "partial"
    folder.mkdir()
    shutil.copy(tiny_vl_small_path / "config.json", folder / "config.json")
    assert inspect(folder).kind == "vision-language"  # the config alone is enough to describe it
    with pytest.raises(InvalidModelFolderError, match="weights.*tokenizer.*processor"):
        prepare(folder)
    for f in tiny_vl_small_path.iterdir():
        shutil.copy(f, folder / f.name)
    assert prepare(folder) == folder.resolve()

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(InvalidModelFolderError, match="PEFT adapter"):
        inspect(adapter)


def test_non_generative_model_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "vit", "architectures": ["ViTForImageClassification"], "hidden_size": 32,
         "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}))
    with pytest.raises(UnsupportedModelError, match="does not generate text"):
        inspect(tmp_path)


def test_hub_id_not_cached_gives_clear_error(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubUnreachableError, match="not found locally and the Hub is unreachable"):
        inspect("fts-test/definitely-not-cached")
    with pytest.raises(HubUnreachableError, match="fts-test/definitely-not-cached"):
        prepare("fts-test/definitely-not-cached")


def _fake_hub_cache(root: Path, repo_id: str, source: Path) -> Path:
    """A Hugging Face cache entry laid out as huggingface_hub writes it (refs/main -> snapshot)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for f in source.iterdir():
        shutil.copy(f, snapshot / f.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def test_hub_id_from_local_cache_inspects_and_prepares_offline(tmp_path, monkeypatch, tiny_vl_small_path):
    from huggingface_hub import constants

    snapshot = _fake_hub_cache(tmp_path, "fts-test/tiny-vl", tiny_vl_small_path)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    info = inspect("fts-test/tiny-vl")
    assert (info.source, info.kind, info.ref) == ("hub", "vision-language", "fts-test/tiny-vl")
    stages = []
    folder = prepare("fts-test/tiny-vl", progress=lambda f, m: stages.append((f, m)))
    assert folder == snapshot and stages[-1][0] == 1.0
    assert load_tokenizer_or_processor(folder, info.kind).image_processor is not None


def test_trust_remote_code_is_off_unless_opted_in(tmp_path, tiny_vl_small_path):
    for fn in (inspect, prepare):
        assert pyinspect.signature(fn).parameters["trust_remote_code"].default is False
    assert pyinspect.signature(load_model).parameters["trust_remote_code"].default is False
    assert pyinspect.signature(load_tokenizer_or_processor).parameters["trust_remote_code"].default is False

    # A model whose code transformers does not ship: described from its config, never executed.
    for f in tiny_vl_small_path.iterdir():
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "fts_custom_lm", "architectures": ["FtsCustomForCausalLM"],
        "auto_map": {"AutoModelForCausalLM": "modeling_fts.FtsCustomForCausalLM"},
        "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
        "vocab_size": 1000, "tie_word_embeddings": False}))
    info = inspect(tmp_path)
    assert info.requires_remote_code and info.trust_remote_code is False and info.kind == "text"
    assert info.num_parameters == 2 * 1000 * 64 + 2 * (4 * 64 * 64 + 3 * 64 * 128 + 2 * 64) + 64
    with pytest.raises(RemoteCodeRequiredError, match="trust remote code"):
        prepare(tmp_path)
    assert prepare(tmp_path, trust_remote_code=True) == tmp_path.resolve()
    assert inspect(tmp_path, trust_remote_code=True).trust_remote_code is True


def test_builtin_facts_match_what_transformers_computes_from_the_config():
    """Built-ins carry their kind and parameter count so listing them needs no torch; this keeps
    those numbers honest against a meta-device instance of each config."""
    from studio.models.builtin import BUILTINS
    from studio.models.info import describe_config

    for b in BUILTINS.values():
        computed = describe_config(b.config(), ref=b.ref, source="builtin", display_name=b.display_name,
                                   description=b.description, is_test_model=b.is_test_model)
        assert computed == inspect(b.ref), b.ref
        assert (computed.kind, computed.num_parameters) == (b.kind, b.num_parameters)


def test_listing_builtins_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys; from studio.models import list_builtin, inspect; list_builtin(); "
            "inspect('builtin:tiny-qwen2.5-vl'); print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
