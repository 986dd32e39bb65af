"""ChatEngine: ONE base model in memory, adapters switched on and off on it.

The worker owns one engine (``ctx.services.chat_engine``, see ``jobs.services``) and keeps it between chat
messages, so the base model is loaded once per chat session, not once per message or per pane.
Adapters are attached to that same model with peft (``load_adapter`` once, then ``set_adapter``);
the base pane runs inside ``disable_adapter()``. Loading another base model first unloads the old
one and frees its memory.

Every pane of a request gets the same sampling settings and the same seed. Generation streams
through ``on_text`` and stops within one token of ``should_stop()`` turning true.

Problems that concern one pane (adapter for another base, missing folder, image on a text model,
prompt longer than the context) raise :class:`PaneError` *before* the model changes state, so the
engine keeps serving the other panes and the next message.
"""
from __future__ import annotations

import contextlib
import copy
import gc
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from transformers import StoppingCriteriaList

from studio.datasets.render import render, template_messages
from studio.threads import torch_threads

from . import adapters as adapter_checks
from .adapters import AdapterRef
from .errors import BaseModelError, PaneError
from .settings import ChatSettings
from .streaming import OnText, PaneStreamer, ShouldStop, StopFlag

log = logging.getLogger("studio.inference")

# Tokens that end a turn in common chat templates; added to the model's own EOS ids so a reply
# stops at the end of the assistant's turn even when generation_config names another EOS.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")
Progress = Callable[[float, str], None]


@dataclass
class Reply:
    """One pane's answer and how it was produced."""

    text: str
    finish_reason: str  # "eos" | "length" | "stopped"
    prompt_tokens: int
    new_tokens: int
    image_tokens: int
    ttft_s: float | None
    elapsed_s: float
    max_new_tokens: int  # after clamping to what the context still holds

    @property
    def tokens_per_s(self) -> float | None:
        """Decoding speed after the first token (the first one also pays for reading the prompt)."""
        if self.ttft_s is None or self.new_tokens < 2 or self.elapsed_s <= self.ttft_s:
            return None
        return (self.new_tokens - 1) / (self.elapsed_s - self.ttft_s)

    @property
    def stopped(self) -> bool:
        return self.finish_reason == "stopped"

    def meta(self) -> dict[str, Any]:
        tps = self.tokens_per_s
        return {"finish_reason": self.finish_reason, "stopped": self.stopped, "prompt_tokens": self.prompt_tokens,
                "new_tokens": self.new_tokens, "image_tokens": self.image_tokens,
                "ttft_s": None if self.ttft_s is None else round(self.ttft_s, 4),
                "tokens_per_s": None if tps is None else round(tps, 2), "elapsed_s": round(self.elapsed_s, 4)}


@dataclass
class EngineStats:
    """Counters the tests and the bench read: how often the expensive things happened."""

    base_loads: int = 0
    base_unloads: int = 0
    adapter_loads: int = 0
    generations: int = 0


@dataclass
class _Base:
    ref: str
    trust_remote_code: bool
    kind: str  # "text" | "vision-language"
    folder: Path
    model: Any
    tokenizer: Any
    processor: Any | None  # vision-language only
    context_length: int | None
    eos_ids: list[int]
    image_token_id: int | None
    loaded: dict[str, str] = field(default_factory=dict)  # peft adapter name -> folder it came from


class ChatEngine:
    """Holds one base model (and its adapters). Thread-safe: one generation at a time."""

    def __init__(self, *, device: str = "auto", dtype: str = "auto", model_cache: str | Path | None = None,
                 threads: int | None = None):
        self.device = _pick_device(device)
        self.dtype = dtype
        self.model_cache = model_cache
        # CPU threads for generation (None: PyTorch default). On a small shared machine fewer can be faster:
        # busy-waiting OpenMP threads fight over cores (measured: 1 thread 6x faster than 2 on 2 busy cores).
        self.threads = threads
        self.stats = EngineStats()
        self._base: _Base | None = None
        self._peft: Any = None  # PeftModel wrapping the base once the first adapter is attached
        self._lock = threading.RLock()

    # -- base model ---------------------------------------------------------------------------------
    @property
    def base_ref(self) -> str | None:
        return self._base.ref if self._base else None

    @property
    def kind(self) -> str | None:
        return self._base.kind if self._base else None

    @property
    def loaded_adapters(self) -> dict[str, str]:
        """peft adapter name -> the folder it was loaded from, for the adapters attached right now."""
        return dict(self._base.loaded) if self._base else {}

    def ensure_base(self, ref: str, *, trust_remote_code: bool = False, progress: Progress | None = None) -> bool:
        """Make ``ref`` the loaded base model. Returns True if it had to be loaded (False: it already was)."""
        with self._lock:
            if self._base is not None and self._base.ref == ref:
                return False
            report = progress or (lambda f, m: None)
            info, folder = self._locate(ref, trust_remote_code, report)  # a bad ref keeps the current model
            self.unload()  # before loading: two models at once may not fit
            self._base = self._load(ref, info, folder, trust_remote_code, report)
            self.stats.base_loads += 1
            return True

    def unload(self) -> None:
        """Drop the model and its adapters and give the memory back (RAM, and GPU memory on CUDA)."""
        with self._lock:
            if self._base is None:
                return
            log.info("unloading %s", self._base.ref)
            self._base = None
            self._peft = None
            gc.collect()  # the model holds reference cycles (hooks, tied weights): collect them now
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self.stats.base_unloads += 1

    def _locate(self, ref: str, trust_remote_code: bool, progress: Progress) -> tuple[Any, Path]:
        """The model's description and a complete local folder (built or downloaded if needed)."""
        from studio.models import ModelError, inspect, prepare

        try:
            info = inspect(ref, trust_remote_code=trust_remote_code)
            progress(0.1, f"preparing {info.display_name}")
            folder = prepare(ref, progress=progress, trust_remote_code=trust_remote_code,
                             **({"cache_dir": self.model_cache} if self.model_cache else {}))
        except ModelError as e:
            raise BaseModelError(str(e)) from e
        except Exception as e:
            raise BaseModelError(f"could not prepare the base model {ref}: {type(e).__name__}: {e}") from e
        return info, Path(folder)

    def _load(self, ref: str, info: Any, folder: Path, trust_remote_code: bool, progress: Progress) -> _Base:
        from studio.models import ModelError, load_model, load_tokenizer_or_processor
        from studio.models.info import VISION_LANGUAGE

        started = time.perf_counter()
        try:
            progress(0.6, f"loading {info.display_name}")
            model = load_model(folder, info.kind, dtype=self._torch_dtype(),
                               device_map=self.device if self.device.startswith("cuda") else None,
                               trust_remote_code=trust_remote_code)
            tok_or_proc = load_tokenizer_or_processor(folder, info.kind, trust_remote_code=trust_remote_code)
        except ModelError as e:
            raise BaseModelError(str(e)) from e
        except Exception as e:  # an unexpected loader failure must not take the worker down
            raise BaseModelError(f"could not load the base model {ref}: {type(e).__name__}: {e}") from e
        model.to(self.device).eval()
        vision = info.kind == VISION_LANGUAGE
        tokenizer = tok_or_proc.tokenizer if vision else tok_or_proc
        text_config = model.config.get_text_config(decoder=True)
        base = _Base(ref=ref, trust_remote_code=trust_remote_code, kind=info.kind, folder=Path(folder), model=model,
                     tokenizer=tokenizer, processor=tok_or_proc if vision else None,
                     context_length=getattr(text_config, "max_position_embeddings", None),
                     eos_ids=_eos_ids(model, tokenizer),
                     image_token_id=_image_token_id(model, tokenizer) if vision else None)
        progress(1.0, f"{info.display_name} loaded")
        log.info("loaded %s (%s) in %.1fs on %s", ref, info.kind, time.perf_counter() - started, self.device)
        return base

    def _torch_dtype(self) -> Any:
        if self.dtype != "auto":
            return self.dtype
        if self.device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32  # CPU: exact, and matches a base model loaded on its own

    def _require_base(self) -> _Base:
        if self._base is None:
            raise BaseModelError("no base model is loaded; call ensure_base(ref) first")
        return self._base

    # -- adapters ---------------------------------------------------------------------------------
    def check_adapter(self, adapter: AdapterRef) -> None:
        """Raise PaneError if ``adapter`` cannot be used with the loaded base model (nothing changes)."""
        with self._lock:
            base = self._require_base()
            config = adapter_checks.read_config(adapter)
            adapter_checks.check_base(adapter, config, base.ref, base.folder)
            adapter_checks.check_fits(base.model, adapter)

    def _attach(self, adapter: AdapterRef) -> None:
        """Load the adapter onto the base model once; later messages only switch to it."""
        from peft import PeftConfig, PeftModel

        base = self._require_base()
        if base.loaded.get(adapter.peft_name) == str(adapter.path):
            return
        self.check_adapter(adapter)
        peft_type = PeftConfig.from_pretrained(str(adapter.path)).peft_type
        if self._peft is not None and self._peft.peft_type != peft_type:
            self._detach_all()  # peft keeps one adapter type per wrapper (LoRA vs AdaLoRA)
        try:
            if self._peft is None:
                self._peft = PeftModel.from_pretrained(base.model, str(adapter.path), adapter_name=adapter.peft_name,
                                                       is_trainable=False)
            else:
                if adapter.peft_name in self._peft.peft_config:  # same id, other folder: replace it
                    self._peft.delete_adapter(adapter.peft_name)
                self._peft.load_adapter(str(adapter.path), adapter_name=adapter.peft_name, is_trainable=False)
        except Exception as e:
            self._recover_after_failed_attach(adapter)
            raise PaneError(f"adapter {adapter.label} could not be loaded onto {base.ref}: "
                            f"{type(e).__name__}: {e}") from e
        self._peft.eval()
        base.loaded[adapter.peft_name] = str(adapter.path)
        self.stats.adapter_loads += 1

    def _detach_all(self) -> None:
        base = self._require_base()
        from studio.methods.freeze import unload_whole_modules, wraps_whole_modules

        if self._peft.active_peft_config.is_prompt_learning:  # virtual tokens: the base was never changed
            base.model = self._peft.get_base_model()
        elif wraps_whole_modules(self._peft):  # freeze / full fine-tuning: peft's unload fails on whole blocks
            base.model = unload_whole_modules(self._peft, merge=False)
        else:
            base.model = self._peft.unload()  # removes the adapter layers, restores the original modules
        self._peft = None
        base.loaded.clear()

    def _recover_after_failed_attach(self, adapter: AdapterRef) -> None:
        """A failed load may leave injected layers behind: remove them, or reload the base if that fails."""
        base = self._require_base()
        try:
            if self._peft is not None and adapter.peft_name in self._peft.peft_config:
                self._peft.delete_adapter(adapter.peft_name)
            if self._peft is None and _has_adapter_layers(base.model):
                raise RuntimeError("the base model holds half-injected adapter layers")
        except Exception:
            log.warning("reloading %s after a failed adapter load", base.ref, exc_info=True)
            ref, trust = base.ref, base.trust_remote_code
            self.unload()
            self.ensure_base(ref, trust_remote_code=trust)

    @contextlib.contextmanager
    def _activated(self, adapter: AdapterRef | None) -> Iterator[Any]:
        """The model to call generate on, with exactly the requested adapter active (or none)."""
        base = self._require_base()
        if adapter is not None:
            self._attach(adapter)
            self._peft.set_adapter(adapter.peft_name)
            yield self._peft
        elif self._peft is not None:
            with self._peft.disable_adapter():
                yield self._peft
        else:
            yield base.model

    # -- generation -------------------------------------------------------------------------------
    def generate(self, messages: list[dict[str, Any]], settings: ChatSettings, *, adapter: AdapterRef | None = None,
                 on_text: OnText | None = None, should_stop: ShouldStop | None = None) -> Reply:
        """Answer the conversation ``messages`` (canonical form, image parts with absolute paths).

        Raises PaneError for a request this model/adapter cannot answer; the engine stays usable."""
        with self._lock:
            base = self._require_base()
            if adapter is not None:
                self._attach(adapter)  # before encoding: a bad adapter is reported first
            inputs, image_tokens = self._encode(base, messages, settings, adapter)
            prompt_len = int(inputs["input_ids"].shape[1])
            max_new = self._room_for_answer(base, prompt_len, settings.max_new_tokens)
            streamer, stop = PaneStreamer(base.tokenizer, on_text), StopFlag(should_stop)
            config = self._generation_config(base, settings, max_new)
            with self._activated(adapter) as model, torch.inference_mode(), torch_threads(self.threads):
                _seed(settings.seed)
                streamer.started = time.perf_counter()
                out = model.generate(**inputs, generation_config=config, streamer=streamer,
                                     stopping_criteria=StoppingCriteriaList([stop]))
            elapsed = time.perf_counter() - streamer.started
            self.stats.generations += 1
            new_ids = out[0, prompt_len:].tolist()
            return Reply(text=base.tokenizer.decode(new_ids, skip_special_tokens=True),
                         finish_reason=_finish_reason(stop, new_ids, base.eos_ids), prompt_tokens=prompt_len,
                         new_tokens=len(new_ids), image_tokens=image_tokens, ttft_s=streamer.ttft_s,
                         elapsed_s=elapsed, max_new_tokens=max_new)

    def _room_for_answer(self, base: _Base, prompt_len: int, wanted: int) -> int:
        limit = base.context_length
        if limit is None:
            return wanted
        if prompt_len >= limit:
            raise PaneError(f"the conversation is {prompt_len} tokens long, but {base.ref} reads at most {limit} "
                            "tokens. Shorten the message or start a new chat.")
        return min(wanted, limit - prompt_len)

    def _generation_config(self, base: _Base, settings: ChatSettings, max_new: int) -> Any:
        config = copy.deepcopy(base.model.generation_config)
        config.max_new_tokens = max_new
        config.max_length = None  # a saved max_length must not cut replies short
        config.do_sample = not settings.greedy
        # Greedy ignores these; unset them so transformers does not warn about unused flags.
        config.temperature = settings.temperature if not settings.greedy else None
        config.top_p = settings.top_p if not settings.greedy else None
        config.top_k = (settings.top_k or None) if not settings.greedy else None
        config.repetition_penalty = settings.repetition_penalty
        config.eos_token_id = base.eos_ids
        pad = base.tokenizer.pad_token_id
        config.pad_token_id = pad if pad is not None else base.eos_ids[0]
        return config

    # -- prompt encoding ----------------------------------------------------------------------------
    def _encode(self, base: _Base, messages: list[dict[str, Any]], settings: ChatSettings,
                adapter: AdapterRef | None) -> tuple[dict[str, Any], int]:
        """Token ids (and pixels) for the conversation plus the assistant's generation prompt, rendered
        exactly as training renders it: the chat template as text, then tokenized without adding
        special tokens a second time."""
        images = [p["image"] for m in messages for p in _parts(m) if p.get("type") == "image"]
        conversation = _with_system(messages, settings.system_prompt)
        if base.processor is None:
            if images:
                raise PaneError(f"{base.ref} is a text-only model and cannot see images. Remove the image, or "
                                "start a chat with a vision-language model (Qwen2.5-VL).")
            text = render(base.tokenizer, template_messages(conversation, vision=False), generation_prompt=True)
            enc = base.tokenizer(text, add_special_tokens=False, return_tensors="pt")
            return {k: v.to(self.device) for k, v in enc.items()}, 0
        text = render(base.processor, template_messages(conversation, vision=True), generation_prompt=True)
        pil_images = _open_images(images)
        _set_pixel_bounds(base.processor, *_pixel_bounds(settings, adapter))
        enc = base.processor(text=[text], images=pil_images or None, return_tensors="pt", add_special_tokens=False)
        image_tokens = int((enc["input_ids"] == base.image_token_id).sum()) if base.image_token_id is not None else 0
        if images and image_tokens == 0:
            raise PaneError("the chat template dropped the image: this model's template has no image placeholder.")
        return {k: v.to(self.device) for k, v in enc.items()}, image_tokens


# -- helpers ------------------------------------------------------------------------------------------
def _pick_device(device: str) -> str:
    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def _seed(seed: int) -> None:
    torch.manual_seed(seed)  # seeds CUDA too; every pane starts from the same random state


def _parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])


def _with_system(messages: list[dict[str, Any]], system_prompt: str) -> list[dict[str, Any]]:
    if not system_prompt or (messages and messages[0].get("role") == "system"):
        return messages
    return [{"role": "system", "content": [{"type": "text", "text": system_prompt}]}, *messages]


def _open_images(paths: list[str]) -> list[Any]:
    from PIL import Image, UnidentifiedImageError

    images = []
    for p in paths:
        try:
            with Image.open(p) as im:
                images.append(im.convert("RGB"))
        except FileNotFoundError:
            raise PaneError(f"the image {p} is missing from the workspace (deleted?).") from None
        except (UnidentifiedImageError, OSError) as e:
            raise PaneError(f"the file {Path(p).name} is not an image this studio can read ({e}).") from None
    return images


def _pixel_bounds(settings: ChatSettings, adapter: AdapterRef | None) -> tuple[int, int]:
    """An adapter sees images at the resolution it was trained with; the base pane uses the chat's."""
    if adapter is not None and adapter.min_pixels and adapter.max_pixels:
        return adapter.min_pixels, adapter.max_pixels
    return settings.min_pixels, settings.max_pixels


def _set_pixel_bounds(processor: Any, min_pixels: int, max_pixels: int) -> None:
    # Same as training (studio.training.data.VisionEncoder): transformers 5 reads the bounds from `size`.
    ip = processor.image_processor
    ip.size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
    for attr, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
        if hasattr(ip, attr):
            setattr(ip, attr, value)


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: list[int] = []
    configured = model.generation_config.eos_token_id
    for value in (configured if isinstance(configured, list) else [configured]):
        if value is not None:
            ids.append(int(value))
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    ids.extend(vocab[t] for t in END_OF_TURN_TOKENS if t in vocab)
    return list(dict.fromkeys(ids))


def _image_token_id(model: Any, tokenizer: Any) -> int | None:
    value = getattr(model.config, "image_token_id", None)
    if value is not None:
        return int(value)
    return tokenizer.convert_tokens_to_ids("<|image_pad|>")


def _finish_reason(stop: StopFlag, new_ids: list[int], eos_ids: list[int]) -> str:
    if stop.triggered:
        return "stopped"
    return "eos" if new_ids and new_ids[-1] in eos_ids else "length"


def _has_adapter_layers(model: Any) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(m, BaseTunerLayer) for m in model.modules())
