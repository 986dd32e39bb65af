"""Runs tab: the studio's work (training runs and other jobs) as it happens, from the database."""
from __future__ import annotations

import dataclasses

import gradio as gr
import pandas as pd

from storage.db import Database
from studio import activity
from ui.i18n import t

REFRESH_S = 2.0
JOB_COLUMNS = ["ID", "Job", "Status", "Progress", "Created (UTC)", "Duration", "Error"]


def jobs_table(db: Database) -> pd.DataFrame:
    rows = [dataclasses.astuple(r) for r in activity.job_rows(db)]
    return pd.DataFrame(rows, columns=JOB_COLUMNS)


def render(db: Database) -> None:
    gr.Markdown(t("jobs.intro"))
    jobs = gr.Dataframe(value=lambda: jobs_table(db), headers=JOB_COLUMNS, interactive=False,
                        label=t("jobs.table"), wrap=True, elem_id="jobs-table")
    with gr.Row():
        job_id = gr.Number(label=t("jobs.id"), precision=0, minimum=1, scale=1)
        cancel = gr.Button(t("jobs.cancel"), variant="stop", scale=0)
        show_log = gr.Button(t("jobs.show_log"), scale=0)
    notice = gr.Markdown()
    log = gr.Code(label=t("jobs.log"), language=None, lines=12, interactive=False)
    timer = gr.Timer(REFRESH_S)
    timer.tick(lambda: jobs_table(db), outputs=jobs, api_name="refresh_jobs", show_progress="hidden")

    def _cancel(jid):
        if not jid:
            return "Enter the ID of the job to cancel."
        try:
            state = activity.cancel_job(db, int(jid))
        except LookupError as e:
            return str(e)
        return f"Job {int(jid)} is {state}; a running job stops within seconds."

    cancel.click(_cancel, inputs=job_id, outputs=notice, api_name="cancel_job")
    show_log.click(lambda jid: activity.job_log_tail(db, int(jid)) if jid else "", inputs=job_id, outputs=log,
                   api_name="job_log")
