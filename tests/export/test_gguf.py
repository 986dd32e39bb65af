"""GGUF exports of a real LoRA on SmolLM2-135M: F16 and Q8_0 files read back by transformers'
GGUF loader (an independent reader), logits compared with the merged model, the GGUF's tokenizer
checked against the studio's on 20 chat prompts, a Modelfile that reproduces the chat template,
and the hostile cases (VL model, prompt-tuning adapter, full disk) refused leaving nothing behind."""
from __future__ import annotations

import errno
import json
import zipfile

import pytest

from storage.models import JobStatus
from studio.export import service
from studio.export.errors import AdapterNotMergeableError, ExportNotReadyError
from studio.export.options import ExportOptionsError
from studio.export.to_gguf import GgufUnsupportedError
from tests.export.helpers import add_adapter, run_export
from tests.export.test_failures import assert_nothing_left

TYPES = ["f16", "q8_0"]


@pytest.fixture(scope="module")
def gguf_exports(module_db, made_adapters):
    """gguf type -> export id; the LoRA adapter (with its run) exported once per type."""
    adapter_id = add_adapter(module_db, made_adapters["lora"], "lora", with_run=True)
    return {t: run_export(module_db, adapter_id, kind="gguf", gguf_type=t) for t in TYPES}


@pytest.mark.parametrize("gguf_type", TYPES)
def test_gguf_export_is_verified_by_reading_it_back(module_db, gguf_exports, gguf_type):
    info = service.get_export(module_db, gguf_exports[gguf_type])
    v = info.verification
    assert info.status == JobStatus.SUCCEEDED, info.error
    assert info.verified is True and info.downloadable and info.kind == "gguf"
    assert v["passed"] and all(v["checks"].values()) and v["gguf_type"] == gguf_type
    assert v["merged_verification"]["passed"], "the merged model is verified against the adapter first"
    assert v["tokenizer"]["prompts"] == 20 and v["tokenizer"]["mismatches"] == []
    assert v["tokenizer"]["same_chat_template"]
    assert v["positions"] > 500
    print(f"\nGGUF {gguf_type}: max |logit diff| vs merged {v['max_abs_diff']:.4f} (mean {v['mean_abs_diff']:.4f}, "
          f"scale {v['logit_scale']:.1f}), top-1 agreement {v['top1_agreement']:.2%} over {v['positions']} positions; "
          f"tokenizer ids identical on {v['tokenizer']['prompts']} prompts")
    if gguf_type == "f16":
        assert v["max_abs_diff"] <= v["tolerance"] < 0.1 * v["logit_scale"]
        assert v["top1_agreement"] >= 0.98
    else:
        assert v["top1_agreement"] >= 0.95
        assert v["conversion"]["tensor_types"]["Q8_0"] > 200  # every matrix quantised, norms kept F32


def test_gguf_file_reloads_independently_and_matches_the_adapter(module_db, gguf_exports, smollm2_path,
                                                                 made_adapters):
    """Independent of the job's own checks: the F16 file, loaded by transformers here, continues a
    prompt the job never saw exactly like the adapter attached to the base does."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = service.export_folder(module_db, gguf_exports["f16"])
    gguf_file = service.get_export(module_db, gguf_exports["f16"]).verification["gguf_file"]
    assert {p.name for p in folder.iterdir()} == {gguf_file, "Modelfile", "README.md"}
    import gguf

    fields = gguf.GGUFReader(folder / gguf_file).fields
    assert fields["general.architecture"].contents() == "llama" and fields["tokenizer.ggml.pre"].contents() == "gpt-2"
    assert fields["tokenizer.ggml.add_bos_token"].contents() is False  # the ChatML template has no BOS
    assert "output.weight" not in {t.name for t in gguf.GGUFReader(folder / gguf_file).tensors}  # tied embeddings
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Name a colour and a fruit."}],
                                        add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32)
    adapter = PeftModel.from_pretrained(base, str(made_adapters["lora"])).eval()
    with torch.inference_mode():
        got = gguf_model.generate(ids, max_new_tokens=8, do_sample=False)[0, ids.shape[1]:].tolist()
        want = adapter.generate(input_ids=ids, max_new_tokens=8, do_sample=False)[0, ids.shape[1]:].tolist()
        with adapter.disable_adapter():
            without = adapter.generate(input_ids=ids, max_new_tokens=8, do_sample=False)[0, ids.shape[1]:].tolist()
    assert got == want
    assert want != without, "the test adapter must change the greedy output"


def test_modelfile_and_card(module_db, gguf_exports):
    info = service.get_export(module_db, gguf_exports["q8_0"])
    folder = service.export_folder(module_db, info.id)
    gguf_file = info.verification["gguf_file"]
    modelfile = (folder / "Modelfile").read_text()
    assert f"FROM ./{gguf_file}" in modelfile
    assert 'TEMPLATE """{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n' in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile
    # the run's dataset rows have no shared system message: the template's own default is kept
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in modelfile
    card = (folder / "README.md").read_text()
    for text in ("library_name: gguf", "GGUF Q8_0", "ollama create", "llama-cli -m " + gguf_file, "lms import",
                 "top-1 agreement", "Training (run", "transformers' GGUF loader"):
        assert text in card, text
    archive = service.download_path(module_db, info.id)
    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
        assert zf.getinfo(f"{folder.name}/{gguf_file}").compress_type == zipfile.ZIP_STORED
    assert names == {f"{folder.name}/{n}" for n in (gguf_file, "Modelfile", "README.md")}
    assert info.sha256 and info.size_bytes == archive.stat().st_size
    assert not list(module_db.workspace.tmp_dir.iterdir()), "the merged work folder must not be left in tmp/"


def test_unknown_gguf_type_and_gguf_type_on_other_kinds_are_refused(module_db, made_adapters):
    adapter_id = add_adapter(module_db, made_adapters["lora"], "lora")
    with pytest.raises(ExportOptionsError, match="Q4_K_M"):
        service.start_export(module_db, adapter_id, kind="gguf", gguf_type="q4_k_m")
    with pytest.raises(ExportOptionsError, match="only applies to kind gguf"):
        service.start_export(module_db, adapter_id, kind="merged", gguf_type="f16")
    assert service.list_exports(module_db, adapter_id=adapter_id) == []


def test_vision_language_model_is_refused_before_queueing(module_db, made_adapters):
    adapter_id = add_adapter(module_db, made_adapters["vl_lora"], "vl_lora")
    with pytest.raises(GgufUnsupportedError, match="Qwen2_5_VLForConditionalGeneration.*mmproj"):
        service.start_export(module_db, adapter_id, kind="gguf", gguf_type="f16")
    assert service.list_exports(module_db, adapter_id=adapter_id) == []


def test_prompt_tuning_adapter_cannot_merge(module_db, smollm2_path, tmp_path):
    import torch
    from peft import PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32)
    get_peft_model(model, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)).save_pretrained(tmp_path / "pt")
    adapter_id = add_adapter(module_db, tmp_path / "pt", "lora")
    for kind in ("gguf", "merged"):
        with pytest.raises(AdapterNotMergeableError, match="PROMPT_TUNING.*adapter only"):
            service.start_export(module_db, adapter_id, kind=kind)
    assert service.list_exports(module_db, adapter_id=adapter_id) == []
    assert service.start_export(module_db, adapter_id, kind="adapter")  # the adapter alone is still offered


def test_full_disk_while_writing_fails_cleanly(module_db, made_adapters, monkeypatch):
    """The writer raising ENOSPC mid-file (as a full disk does): the export fails with a message
    saying so, and neither the half-written GGUF nor the merged work folder is left anywhere."""
    import gguf

    written = []

    def full_disk(self, tensor, *args, **kwargs):
        written.append(tensor.nbytes)
        if len(written) > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, tensor, *args, **kwargs)

    original = gguf.GGUFWriter.write_tensor_data
    monkeypatch.setattr(gguf.GGUFWriter, "write_tensor_data", full_disk)
    adapter_id = add_adapter(module_db, made_adapters["lora"], "lora")
    export_id = run_export(module_db, adapter_id, kind="gguf", gguf_type="q8_0")
    info = service.get_export(module_db, export_id)
    assert info.status == JobStatus.FAILED and info.verified is False
    assert "disk" in info.error and "full" in info.error and "free some space" in info.error
    assert len(written) == 4, "the failure happened part-way through the tensors"
    assert_nothing_left(module_db, export_id)
    with pytest.raises(ExportNotReadyError):
        service.download_path(module_db, export_id)


def test_options_round_trip_through_the_row(module_db, gguf_exports):
    info = service.get_export(module_db, gguf_exports["q8_0"])
    assert info.options["kind"] == "gguf" and info.options["gguf_type"] == "q8_0"
    assert json.dumps(info.verification)  # everything recorded is plain JSON


def test_cli_queues_a_gguf_export_and_refuses_bad_ones(module_db, made_adapters):
    import subprocess
    import sys

    from tests.export.helpers import subprocess_env
    from tests.export.test_adapter_export import ROOT

    adapter_id = add_adapter(module_db, made_adapters["lora"], "lora")
    vl_id = add_adapter(module_db, made_adapters["vl_lora"], "vl_lora")

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "studio", "--workspace", str(module_db.workspace.root), "export",
                               *args], cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=120)

    queued = cli(f"adapter:{adapter_id}", "--gguf", "Q8_0")
    assert queued.returncode == 0 and "queued export" in queued.stdout, queued.stderr[-2000:]
    export = service.list_exports(module_db, adapter_id=adapter_id)[0]
    assert export.kind == "gguf" and export.options["gguf_type"] == "q8_0" and export.status == JobStatus.QUEUED
    service.cancel_export(module_db, export.id)
    assert cli(f"adapter:{adapter_id}", "--gguf", "q4_k_m").returncode == 2  # not offered: argparse refuses
    refused = cli(f"adapter:{vl_id}", "--gguf", "f16")
    assert refused.returncode == 2 and "mmproj" in refused.stderr
    assert cli(f"adapter:{adapter_id}", "--gguf", "f16", "--merged").returncode == 2  # one kind only


def test_cli_summary_of_a_finished_gguf_export(module_db, gguf_exports, capsys):
    from studio.cli.export import _print_summary, _summary

    _print_summary(_summary(module_db, service.get_export(module_db, gguf_exports["f16"])))
    out = capsys.readouterr().out
    assert "(gguf) verified" in out and "f16.gguf (f16) read back with transformers" in out
    assert "top-1 agreement" in out and "ollama create NAME -f Modelfile" in out


def test_job_refuses_an_unsupported_model_before_merging(module_db, made_adapters, monkeypatch):
    """A base whose config the UI process could not read (a Hub id, say) is checked by the job,
    before the slow merge: the VL adapter queued past the UI-side check fails with the reason."""
    monkeypatch.setattr(service, "check_gguf_base", lambda ref: None)
    adapter_id = add_adapter(module_db, made_adapters["vl_lora"], "vl_lora")
    export_id = run_export(module_db, adapter_id, kind="gguf", gguf_type="f16")
    info = service.get_export(module_db, export_id)
    assert info.status == JobStatus.FAILED and "GGUF export covers" in info.error and "mmproj" in info.error
    assert "merging" not in (info.progress.get("message") or ""), "refused before the merge started"
    assert_nothing_left(module_db, export_id)
