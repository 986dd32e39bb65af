"""A checkpoint counts only once its marker is written; resume and pruning ignore the others."""
from __future__ import annotations

from studio.training import checkpoints


def make(folder, step: int, complete: bool):
    d = folder / f"checkpoint-{step}"
    d.mkdir(parents=True)
    (d / "adapter_model.safetensors").write_bytes(b"x" * 10)
    if complete:
        checkpoints.mark_complete(d, step)
    return d


def test_newest_complete_wins_over_a_newer_half_written_one(tmp_path):
    make(tmp_path, 5, True)
    make(tmp_path, 10, True)
    half = make(tmp_path, 15, False)  # the process died while the Trainer was writing it
    assert checkpoints.latest_complete(tmp_path).name == "checkpoint-10"
    assert checkpoints.remove_incomplete(tmp_path) == [half] and not half.exists()
    assert checkpoints.latest_complete(tmp_path / "missing") is None


def test_prune_keeps_the_newest_complete_ones_only(tmp_path):
    for step, done in ((2, True), (4, False), (6, True), (8, True)):
        make(tmp_path, step, done)
    checkpoints.prune(tmp_path, keep=2)
    assert [p.name for p in sorted(tmp_path.iterdir())] == ["checkpoint-6", "checkpoint-8"]
    assert not list(tmp_path.glob("*/.studio-complete.json.tmp"))  # the marker was renamed into place
