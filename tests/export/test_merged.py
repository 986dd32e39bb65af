"""Merged exports of real adapters (LoRA, QLoRA, AdaLoRA on SmolLM2-135M; LoRA on the tiny
Qwen2.5-VL): verified on the row, complete on disk, and loadable by plain transformers in a fresh
process without peft, reproducing the adapter's greedy output."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from storage.models import JobStatus
from studio.export import service
from tests.export.helpers import add_adapter, run_export, subprocess_env

NAMES = ["lora", "qlora", "adalora", "vl_lora"]
# Prompts unlike the job's own verification probes, so the check below is independent of it.
TEXT_PROMPT = "Name a colour and a fruit."
IMAGE_PROMPT = "What colours do you see?"
NEW_TOKENS = 8


@pytest.fixture(scope="module")
def merged(module_db, made_adapters):
    """name -> export id; each built once (fp32, small shards so sharding is exercised)."""
    ids = {}
    for name in NAMES:
        adapter_id = add_adapter(module_db, made_adapters[name], name, with_run=(name == "lora"))
        ids[name] = run_export(module_db, adapter_id, kind="merged", dtype="float32", shard_size="200MB")
    return ids


@pytest.mark.parametrize("name", NAMES)
def test_merged_export_is_verified_with_numbers(module_db, merged, name):
    info = service.get_export(module_db, merged[name])
    v = info.verification
    assert info.status == JobStatus.SUCCEEDED, info.error
    assert info.verified is True and info.downloadable
    assert v["dtype"] == "float32" and v["passed"] and all(v["checks"].values())
    assert v["max_abs_diff"] <= v["tolerance"] <= 1e-3 + 1e-4 * v["logit_scale"]
    assert v["adapter_effect_max_abs"] > 100 * v["max_abs_diff"], "the adapter must really change the outputs"
    assert v["greedy_match"] and v["inputs_match"]
    assert len(v["probes"]) == 2 and all(p["tokens"] > 5 for p in v["probes"])
    if name == "vl_lora":
        assert v["probes"][0]["probe"].startswith("image")


@pytest.mark.parametrize("name", NAMES)
def test_merged_folder_is_complete_and_archived(module_db, merged, name, smollm2_path, tiny_vl_path):
    info = service.get_export(module_db, merged[name])
    folder = service.export_folder(module_db, info.id)
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "generation_config.json", "README.md", "tokenizer.json", "tokenizer_config.json",
            "chat_template.jinja"} <= names
    assert not any(n.startswith("adapter_") for n in names), "a merged export must not look like an adapter"
    if name == "vl_lora":
        assert "processor_config.json" in names or "preprocessor_config.json" in names
        base = tiny_vl_path
    else:  # 538 MB of fp32 in 200 MB shards
        assert "model.safetensors.index.json" in names and len(list(folder.glob("model-*-of-*.safetensors"))) == 3
        base = smollm2_path
    assert (folder / "chat_template.jinja").read_text() == (base / "chat_template.jinja").read_text()
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config.get("dtype") == "float32"

    archive = service.download_path(module_db, info.id)
    assert archive.parent == folder.parent and archive.suffix == ".zip"
    assert archive.stat().st_size == info.size_bytes
    from studio.export.verify import sha256_file
    assert sha256_file(archive) == info.sha256
    with zipfile.ZipFile(archive) as zf:
        assert zf.testzip() is None
        members = {m for m in zf.namelist()}
    assert members == {f"{folder.name}/{p.name}" for p in folder.iterdir()}


def test_model_card_describes_training_and_loading(module_db, merged):
    card = (service.export_folder(module_db, merged["lora"]) / "README.md").read_text()
    for expected in ("SmolLM2-135M-Instruct", "builtin:smollm2-135m-instruct", "LoRA", "r=8", "alpha=16",
                     "alpaca demo", "120 rows (108 train, 12 validation)", "0:12:05", "1.2345", "1.4567",
                     "3.00 GiB", "2.50 GiB", "AutoModelForCausalLM.from_pretrained", "Verified: yes"):
        assert expected in card, f"{expected!r} missing from the model card"
    vl_card = (service.export_folder(module_db, merged["vl_lora"]) / "README.md").read_text()
    assert "AutoModelForImageTextToText" in vl_card and "AutoProcessor" in vl_card
    assert "No training record" in vl_card
    qlora_card = (service.export_folder(module_db, merged["qlora"]) / "README.md").read_text()
    assert "merged into a float32 reload of the base, not into the 4-bit weights" in qlora_card


FRESH_PROCESS = r"""
import json, sys
from PIL import Image
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

results = {}
for job in json.loads(sys.argv[1]):
    if job["image"]:
        processor = AutoProcessor.from_pretrained(job["folder"])
        model = AutoModelForImageTextToText.from_pretrained(job["folder"])
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": job["prompt"]}]}]
        text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        inputs = processor(text=[text], images=[Image.open(job["image"])], return_tensors="pt")
    else:
        tokenizer = AutoTokenizer.from_pretrained(job["folder"])
        model = AutoModelForCausalLM.from_pretrained(job["folder"])
        inputs = tokenizer.apply_chat_template([{"role": "user", "content": job["prompt"]}], add_generation_prompt=True,
                                               return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=job["tokens"], do_sample=False)
    results[job["name"]] = out[0, inputs["input_ids"].shape[1]:].tolist()
results["peft_imported"] = "peft" in sys.modules
print("RESULT " + json.dumps(results))
"""


def _adapter_greedy(name: str, adapter: Path, base: Path, image: Path | None) -> list[int]:
    """What the user saw: the adapter attached (unmerged) to the fp32 base, greedy."""
    import torch
    from peft import PeftModel
    from PIL import Image

    from studio.models import load_model, load_tokenizer_or_processor

    kind = "vision-language" if image else "text"
    model = PeftModel.from_pretrained(load_model(base, kind, dtype="float32"), str(adapter)).eval()
    processor = load_tokenizer_or_processor(base, kind)
    if image:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": IMAGE_PROMPT}]}]
        text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        inputs = processor(text=[text], images=[Image.open(image)], return_tensors="pt")
    else:
        inputs = processor.apply_chat_template([{"role": "user", "content": TEXT_PROMPT}], add_generation_prompt=True,
                                               return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
    return out[0, inputs["input_ids"].shape[1]:].tolist()


def test_merged_models_load_without_peft_in_a_fresh_process_and_match_the_adapter(
        module_db, merged, made_adapters, smollm2_path, tiny_vl_path, tmp_path):
    from studio.export.verify import probe_image

    image = tmp_path / "probe.png"
    probe_image().resize((112, 84)).save(image)
    jobs, expected = [], {}
    for name in NAMES:
        is_vl = name == "vl_lora"
        folder = service.export_folder(module_db, merged[name])
        jobs.append({"name": name, "folder": str(folder), "prompt": IMAGE_PROMPT if is_vl else TEXT_PROMPT,
                     "image": str(image) if is_vl else None, "tokens": NEW_TOKENS})
        expected[name] = _adapter_greedy(name, made_adapters[name], tiny_vl_path if is_vl else smollm2_path,
                                         image if is_vl else None)
    env = {k: v for k, v in subprocess_env().items() if k != "PYTHONPATH"}  # plain transformers only
    proc = subprocess.run([sys.executable, "-c", FRESH_PROCESS, json.dumps(jobs)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    got = json.loads(line[len("RESULT "):])
    assert got.pop("peft_imported") is False, "loading a merged export must not need peft"
    assert got == expected
    assert len(set(map(tuple, expected.values()))) == len(NAMES)


def test_a_bf16_export_is_verified_within_the_bf16_tolerance(module_db, made_adapters, tiny_vl_path):
    from safetensors import safe_open

    from studio.export.merge import resolve_dtype

    assert resolve_dtype("auto", tiny_vl_path) == "float32"  # auto = the dtype the base was saved in
    adapter_id = add_adapter(module_db, made_adapters["vl_lora"], "vl_lora")
    info = service.get_export(module_db, run_export(module_db, adapter_id, kind="merged", dtype="bf16"))
    v = info.verification
    assert info.downloadable, info.error
    assert v["dtype"] == "bfloat16" and v["tolerance"] == pytest.approx(0.1 + 0.08 * v["logit_scale"])
    assert v["max_abs_diff"] <= v["tolerance"] and v["checks"]["closer_to_adapter_than_to_base"]
    folder = service.export_folder(module_db, info.id)
    assert json.loads((folder / "config.json").read_text())["dtype"] == "bfloat16"
    with safe_open(folder / "model.safetensors", "pt") as f:
        assert {str(f.get_slice(k).get_dtype()) for k in f.keys()} == {"BF16"}
