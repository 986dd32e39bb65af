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


def test_the_live_plot_names_all_its_series_from_the_first_frame(db):
    """Gradio's LinePlot keeps the colour series of the first value it draws; a series first seen
    later is never drawn (the reported 'axes but no line'). Every frame names all three series."""
    import math

    from storage.models import Run, RunMetric
    from ui.tabs import runs

    empty = runs.live_loss_frame(db, None)
    assert set(empty["series"]) == {"train", "train (raw)", "eval"} and empty["loss"].isna().all()
    with db.session() as s:
        s.add(Run(id=5, name="r", model_ref="builtin:x", method="lora"))
        s.add_all([RunMetric(run_id=5, stage="train", step=i, loss=3.0 - 0.1 * i) for i in range(1, 5)])
    frame = runs.live_loss_frame(db, 5)
    assert set(frame["series"]) == {"train", "train (raw)", "eval"}
    assert frame[frame.series == "train (raw)"]["loss"].tolist() == [2.9, 2.8, 2.7, 2.6000000000000001]
    assert all(math.isnan(v) for v in frame[frame.series == "eval"]["loss"])  # a placeholder, drawn as nothing


def test_a_queued_run_moves_up_and_down_from_the_runs_tab_and_its_attempts_show(db):
    from jobs import queue
    from storage.models import Job, Run
    from ui.tabs import runs

    with db.session() as s:
        rows = [Run(name=f"r{i}", model_ref="m", method="lora", status="queued") for i in range(2)]
        s.add_all(rows)
        s.flush()
        for run in rows:
            job = Job(kind="train", payload={"run_id": run.id})
            s.add(job)
            s.flush()
            run.job_id = job.id
        first, second = (r.id for r in rows)
    assert "priority 1; 0 jobs ahead" in runs.run_action(db, "up", second)
    assert [j.payload["run_id"] for j in queue.queued_jobs(db)] == [second, first]
    assert "priority 0, 1 ahead in the queue" in runs.status_html(db, first)
    runs.run_action(db, "down", second)
    runs.run_action(db, "down", second)
    assert [j.payload["run_id"] for j in queue.queued_jobs(db)] == [first, second]
    queue.claim_job(db, queue.get(db, 1).id, "w")
    assert "only a queued run can move" in runs.run_action(db, "up", first)

    with db.session() as s:
        s.get(Run, first).attempts = [
            {"n": 1, "trigger": "start", "started": "2026-11-30 09:00:00", "ended": "2026-11-30 09:05:00",
             "outcome": "worker-lost", "why": "worker w stopped renewing its lease", "from_step": 0, "to_step": 20},
            {"n": 2, "trigger": "requeued", "started": "2026-11-30 09:05:02", "from_step": 20}]
    view = runs.status_html(db, first)
    assert "#1 (start) started 2026-11-30 09:00:00, ended 2026-11-30 09:05:00 · from step 0 to 20 · worker-lost" in view
    assert "#2 (requeued) started 2026-11-30 09:05:02, running · from step 20" in view
    assert history.attempts_text(db, runs.training.get_run(db, first)) == "2: 0→20 worker lost, 20→ running"
