"""The UI shell served for real and driven through gradio_client (the browser test comes later)."""
from __future__ import annotations

import sys

from jobs import queue
from storage.models import JobStatus


def test_ui_process_does_not_import_torch_or_transformers():
    import subprocess

    code = ("import sys, tempfile, ui.app, launch; from storage.db import Database; "
            "ui.app.build_app(Database.open(tempfile.mkdtemp() + '/ws')); "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False False"  # building every tab included


def test_runs_tab_lists_jobs_from_the_database_and_cancels(db, client):
    job_id = queue.enqueue(db, "system.sleep", {"seconds": 60})
    table = client.predict(api_name="/refresh_jobs")
    rows = table["data"]
    assert [r[0] for r in rows] == [job_id]
    assert rows[0][1] == "Sleep (diagnostic)" and rows[0][2] == "queued"

    message = client.predict(job_id, api_name="/cancel_job")
    assert f"Job {job_id} is cancelled" in message
    assert queue.get(db, job_id).status == JobStatus.CANCELLED
    assert client.predict(9999, api_name="/cancel_job") == "job 9999 does not exist"
