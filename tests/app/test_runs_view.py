"""The Runs tab's pieces that a person reads: the log's last lines and the smoothed loss."""
from __future__ import annotations

from studio import activity
from studio.training import history


def test_log_panel_ends_with_the_files_last_line_after_a_resume(db):
    """A resumed run appends to the same job log: the panel must end where the file ends, even when
    earlier attempts wrote far more than the panel shows."""
    path = db.workspace.job_log(7)
    path.parent.mkdir(parents=True, exist_ok=True)
    first_attempt = "".join(f"attempt 1: loading shard {i} of the model, please wait ...\n" for i in range(3000))
    path.write_text(first_attempt + "attempt 2: resumed from step 20\nstep 40/40\nadapter saved\n", encoding="utf-8")
    shown = activity.job_log_last_lines(db, 7, lines=10)
    assert shown.splitlines()[-1] == "adapter saved"
    assert shown.splitlines()[-3] == "attempt 2: resumed from step 20"
    assert len(shown.splitlines()) == 10


def test_smoothing_is_tensorboards_debiased_ema():
    raw = [4.0, 2.0, 3.0, 1.0]
    smooth = history.ema(raw, 0.6)
    assert smooth[0] == 4.0  # debiased: the first point is the first value, not 40% of it
    assert abs(smooth[1] - (0.6 * 0.4 * 4 + 0.4 * 2) / (1 - 0.6 ** 2)) < 1e-12
    assert max(smooth) - min(smooth) < max(raw) - min(raw)  # a trend, not the noise
    colours = history.loss_colours([3])
    assert colours["#3 train"] != colours["#3 train (raw)"] and "#3 eval" in colours
