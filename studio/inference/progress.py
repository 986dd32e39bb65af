"""Writes each pane's partial answer into the job row while it is generated.

The UI polls the job (``service.poll``) on a timer; writing on every token would be one database
commit per token, so text updates are throttled to one write per ``interval_s`` (state changes are
written at once). The job's ``progress`` JSON looks like::

    {"message": "generating: identity-lora (#4)", "order": ["base", "adapter-4"],
     "panes": {"base": {"label": "Base model", "state": "done", "text": "...", "error": null},
               "adapter-4": {"label": "...", "state": "generating", "text": "I am No", "error": null}}}

Pane states: waiting -> generating -> done | stopped | error.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from jobs.context import JobContext

WAITING, GENERATING, DONE, STOPPED, ERROR = "waiting", "generating", "done", "stopped", "error"
DEFAULT_INTERVAL_S = 0.15


class PaneProgress:
    def __init__(self, ctx: JobContext, panes: list[dict[str, Any]], interval_s: float = DEFAULT_INTERVAL_S):
        self.ctx, self.interval_s = ctx, interval_s
        self.order = [p["key"] for p in panes]
        self.panes = {p["key"]: {"label": p["label"], "state": WAITING, "text": "", "error": None, "meta": {}}
                      for p in panes}
        self.message = ""
        self._written_message = ""
        self._last_write = 0.0

    def status(self, message: str) -> None:
        self.message = message
        self.flush()

    def start(self, key: str) -> None:
        self.panes[key].update(state=GENERATING, text="", error=None)
        self.message = f"generating: {self.panes[key]['label']}"
        self.flush()

    def text_sink(self, key: str) -> Callable[[str], None]:
        """A callback for the streamer: keeps the newest text, writes it at most every interval."""
        def on_text(text: str) -> None:
            self.panes[key]["text"] = text
            if time.monotonic() - self._last_write >= self.interval_s:
                self.flush()
        return on_text

    def finish(self, key: str, text: str, state: str, meta: dict[str, Any] | None = None) -> None:
        self.panes[key].update(state=state, text=text, meta=meta or {})
        self.flush()

    def fail(self, key: str, error: str) -> None:
        self.panes[key].update(state=ERROR, error=error)
        self.flush()

    def flush(self) -> None:
        # The message goes to the job log too: pass it only when it changed, not with every text update.
        changed = self.message if self.message != self._written_message else None
        self.ctx.progress(message=changed, panes=self.panes, order=self.order)
        self._written_message = self.message
        self._last_write = time.monotonic()
