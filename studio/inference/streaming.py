"""Hooks into ``model.generate``: a streamer that hands out the reply text as it grows, and a
stopping criterion that ends generation as soon as the user presses stop.

The streamer is called synchronously from inside ``generate`` (no extra thread, unlike
``TextIteratorStreamer``), so the job that runs generate is also the one writing partial text to
the database, throttled by the caller.
"""
from __future__ import annotations

import time
from typing import Callable

import torch
from transformers import StoppingCriteria
from transformers.generation.streamers import BaseStreamer

OnText = Callable[[str], None]
ShouldStop = Callable[[], bool]


class PaneStreamer(BaseStreamer):
    """Collects the new token ids of a batch-of-one generation and reports the decoded text.

    The whole reply is decoded at every token (a few thousand tokens at most: cheap), which keeps
    multi-token characters and tokenizer spacing rules right. Text ending in U+FFFD is an incomplete
    UTF-8 sequence: it is held back until the next token completes it.
    """

    def __init__(self, tokenizer, on_text: OnText | None = None):
        self.tokenizer, self.on_text = tokenizer, on_text
        self.ids: list[int] = []
        self.started = time.perf_counter()
        self.first_token_at: float | None = None
        self._prompt_seen = False
        self._last_text = ""

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # generate() first passes the prompt itself
            self._prompt_seen = True
            return
        if value.dim() > 1:
            if value.shape[0] != 1:
                raise ValueError("PaneStreamer streams one sequence at a time")
            value = value[0]
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.ids.extend(int(t) for t in value.tolist())
        text = self.text()
        if text != self._last_text and not text.endswith("\ufffd"):
            self._last_text = text
            if self.on_text is not None:
                self.on_text(text)

    def end(self) -> None:
        text = self.text()
        if text != self._last_text and self.on_text is not None:
            self._last_text = text
            self.on_text(text)

    def text(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True)

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started


class StopFlag(StoppingCriteria):
    """Ends generation when ``should_stop()`` turns true; checked once per generated token.
    ``should_stop`` must be cheap (the job context reads the cancel flag at most every ~0.1 s)."""

    def __init__(self, should_stop: ShouldStop | None):
        self.should_stop = should_stop
        self.triggered = False

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        if not self.triggered and self.should_stop is not None and self.should_stop():
            self.triggered = True
        return torch.full((input_ids.shape[0],), self.triggered, dtype=torch.bool, device=input_ids.device)
