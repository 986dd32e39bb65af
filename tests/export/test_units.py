"""Fast checks of the pieces: request options, the verification verdict, the archive writer."""
from __future__ import annotations

import zipfile

import pytest
import torch

from studio.export import package
from studio.export.options import ExportOptions, ExportOptionsError
from studio.export.verify import ProbeOutput, compare


def test_options_are_normalised_and_every_problem_is_reported():
    assert ExportOptions.parse("merged", "bf16", "500mb") == ExportOptions("merged", "bfloat16", "500MB", "auto")
    assert ExportOptions.parse("adapter", "FP32", "4gib", "cpu").to_dict() == {
        "kind": "adapter", "dtype": "float32", "shard_size": "4GiB", "device": "cpu", "gguf_type": None}
    with pytest.raises(ExportOptionsError) as e:
        ExportOptions.parse("merged", "nf4", "1KB")
    assert len(e.value.problems) == 2 and "lossy" in str(e.value) and "between 1MB and 100GB" in str(e.value)


def _outputs(logits, base=None, greedy=(1, 2, 3)):
    return [ProbeOutput(logits=logits, greedy=list(greedy), base_logits=base)]


def test_verdict_passes_a_faithful_merge_and_fails_a_dropped_adapter():
    torch.manual_seed(0)
    base = torch.randn(12, 50) * 10
    reference = base + torch.randn(12, 50)  # what the adapter does
    faithful = compare(_outputs(reference, base), _outputs(reference + 1e-5), "float32")
    assert faithful["passed"] and faithful["max_abs_diff"] < 1e-4 and faithful["greedy_match"]

    dropped = compare(_outputs(reference, base), _outputs(base.clone()), "bfloat16")
    assert not dropped["passed"]
    assert dropped["checks"]["closer_to_adapter_than_to_base"] is False


def test_half_precision_tolerates_rounding_noise_but_not_flipped_decisions():
    torch.manual_seed(0)
    reference = torch.randn(40, 100) * 10
    base = reference + torch.randn(40, 100)
    noisy = reference * (1 + torch.randn_like(reference) * 2**-8)  # bf16-sized relative noise
    assert compare(_outputs(reference, base), _outputs(noisy), "bfloat16")["passed"]

    flipped = reference.clone()
    top = reference.argmax(-1)
    flipped[torch.arange(40), top] -= 100  # every position now chooses another token
    verdict = compare(_outputs(reference, base), _outputs(flipped), "bfloat16")
    assert not verdict["passed"] and verdict["top1_agreement_decisive"] == 0.0


def test_near_ties_are_not_counted_as_disagreements():
    reference = torch.tensor([[5.0, 4.99, 0.0]] * 4)
    candidate = torch.tensor([[4.99, 5.0, 0.0]] * 4)  # flips a 0.01 tie, within the tolerance
    verdict = compare(_outputs(reference), _outputs(candidate), "bfloat16")
    assert verdict["top1_agreement"] == 0.0 and verdict["top1_agreement_decisive"] == 1.0 and verdict["passed"]


def test_zip_streams_every_file_and_refuses_symlinks(tmp_path):
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"\0" * (package.CHUNK + 10))
    (folder / "config.json").write_text("{}")
    (folder / "sub" / "a.txt").write_text("a")
    seen = []
    members = package.write_zip(folder, tmp_path / "model.zip", on_bytes=seen.append)
    assert members == ["model/config.json", "model/model.safetensors", "model/sub/a.txt"]
    assert sum(seen) == package.folder_size(folder) and max(seen) == package.CHUNK
    with zipfile.ZipFile(tmp_path / "model.zip") as zf:
        assert zf.testzip() is None
        assert zf.getinfo("model/model.safetensors").compress_type == zipfile.ZIP_STORED
        assert zf.getinfo("model/config.json").compress_type == zipfile.ZIP_DEFLATED

    (folder / "escape").symlink_to("/etc/hostname")
    with pytest.raises(ValueError, match="symbolic link"):
        package.write_zip(folder, tmp_path / "again.zip")
