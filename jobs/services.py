"""What a worker owns and lends to the jobs it runs in its own process: today, the chat engine.

A :class:`WorkerServices` is created by each :class:`jobs.worker.Worker` (and by each inline run
that is not given one) and reaches job handlers as ``ctx.services``. Nothing here is a module
global: two workers in one process (tests) have two engines, and a test that wants to count model
loads starts from a fresh object. The engine is created on first use, so a worker that never chats
never imports torch.
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch-free at import time
    from studio.inference.engine import ChatEngine

log = logging.getLogger("jobs.services")


def engine_from_env(device: str | None = None) -> ChatEngine:
    """A chat engine configured like training (FTS_TORCH_THREADS) and by FTS_CHAT_DEVICE/DTYPE
    (``device``: this one instead, e.g. "cpu" for a chat that does not fit beside a GPU's jobs)."""
    from studio.inference.engine import ChatEngine

    threads = os.environ.get("FTS_TORCH_THREADS")
    dtype = os.environ.get("FTS_CHAT_DTYPE", "auto") if device is None else "auto"
    return ChatEngine(device=device or os.environ.get("FTS_CHAT_DEVICE", "auto"), dtype=dtype,
                      threads=int(threads) if threads else None)


class WorkerServices:
    """The long-lived things of one worker. The engine itself is thread-safe (one generation at a
    time); the worker's scheduler runs one chat job at a time so a job's panes share one base model."""

    def __init__(self, engine_factory: Callable[[], ChatEngine] = engine_from_env):
        self._engine_factory = engine_factory
        self._engine: ChatEngine | None = None
        self._cpu_engine: ChatEngine | None = None  # chats the user sent to the CPU (the GPU was full)
        self._lock = threading.Lock()

    def chat_engine_for(self, device: str | None) -> ChatEngine:
        """The engine for a chat job: the worker's own, or (``device="cpu"``) one on the CPU when the
        worker's engine is on a GPU. The CPU one's memory is RAM, outside the GPUs' budget."""
        engine = self.chat_engine
        if device != "cpu" or engine.device == "cpu":
            return engine
        with self._lock:
            if self._cpu_engine is None:
                self._cpu_engine = engine_from_env("cpu")
            return self._cpu_engine

    @property
    def chat_engine(self) -> ChatEngine:
        with self._lock:
            if self._engine is None:
                self._engine = self._engine_factory()
            return self._engine

    @property
    def chat_model_loaded(self) -> str | None:
        """The base model the engine holds (None: nothing in memory), without creating an engine."""
        with self._lock:
            return self._engine.base_ref if self._engine is not None else None

    def release(self) -> None:
        """Unload the chat model (another job needs the memory); the next chat loads it again."""
        with self._lock:
            engine = self._engine
        _unload(engine)

    def close(self) -> None:
        """Release everything; the object can still be used (it starts again from nothing)."""
        self.release()
        with self._lock:
            cpu, self._engine, self._cpu_engine = self._cpu_engine, None, None
        _unload(cpu)


def _unload(engine: ChatEngine | None) -> None:
    if engine is None:
        return
    try:
        engine.unload()  # waits for a generation in progress (the engine's own lock)
    except Exception:
        log.exception("could not release the chat engine's model")
