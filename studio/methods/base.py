"""What every PEFT method module shares: the shape of a method, problems, explanations, targets.

A method module (``lora.py``, ``qlora.py``, ``adalora.py``) defines a typed ``Settings`` model,
named ``PRESETS``, ``EXPLAIN`` texts for the UI, and the hooks below, and exports them as one
``METHOD = Method(...)``. ``studio.methods.METHODS`` is the table of all of them; the spec, the
Train tab, the estimator, the trainer, the worker's pre-flight and the export read only the table,
and the tests loop over it. A hook a method does not need keeps its default.

This module imports neither torch nor peft: the UI reads presets and explanations without them.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field

from studio.spec.problems import Problem
from studio.spec.registry import MethodSettings, register_method

if TYPE_CHECKING:
    from studio.spec import RunSpec


@dataclass(frozen=True)
class Explain:
    """Plain-language texts the UI shows beside a method."""

    summary: str
    memory: str
    speed: str
    when: str


# -- which layers get adapters ------------------------------------------------------------------

TargetMode = Literal["attention", "all-linear", "custom"]

# Leaf names of attention projections across common architectures (Llama/Mistral/Qwen/Gemma use
# q/k/v/o_proj; Phi-3 qkv_proj; GPT-2 c_attn; GPT-NeoX/Falcon query_key_value). peft matches a
# list entry against the end of a module name, so unknown names simply match nothing.
ATTENTION_LEAVES = ["q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "c_attn", "query_key_value"]
# Qwen2.5-VL: vision blocks have ``attn.qkv`` / ``attn.proj``, the projector is ``visual.merger``.
VISION_ATTENTION_LEAVES = ["attn.qkv", "attn.proj"]
VISION_TOWER = "visual"
PROJECTOR = "merger"


class Targets(BaseModel):
    """Which linear layers get adapters. ``attention``: the attention projections (fewest
    parameters, the original LoRA paper); ``all-linear``: attention and MLP (QLoRA paper: matches
    full fine-tuning more closely); ``custom``: the module names you list (suffix match)."""

    model_config = ConfigDict(extra="forbid")
    mode: TargetMode = "all-linear"
    custom: list[str] = Field(default_factory=list)

    def estimator_targets(self) -> Any:
        """The estimator's ``targets``: a mode name, or the custom module names."""
        return tuple(self.custom) if self.mode == "custom" else self.mode


@dataclass(frozen=True)
class ModelFacts:
    """The few facts about a model a method needs, read from the registry's ``ModelInfo`` (or
    anything with ``kind``/``model_type``), so methods do not depend on the registry's shape."""

    kind: str = "text"  # "text" | "vision-language"
    model_type: str = ""
    config: dict = field(default_factory=dict, compare=False, hash=False)  # config.json, when known

    @property
    def text_config(self) -> dict:
        return {**self.config, **(self.config.get("text_config") or {})}

    @property
    def num_layers(self) -> int | None:
        n = self.text_config.get("num_hidden_layers")
        return int(n) if n else None

    @property
    def tied_embeddings(self) -> bool:
        return bool(self.text_config.get("tie_word_embeddings", self.config.get("tie_word_embeddings", False)))

    @property
    def is_vision(self) -> bool:
        return self.kind == "vision-language"

    @classmethod
    def of(cls, info: Any) -> "ModelFacts":
        if isinstance(info, ModelFacts):
            return info
        if isinstance(info, dict):
            return cls(kind=info.get("kind", "text"), model_type=info.get("model_type", ""),
                       config=info.get("config") or {})
        return cls(kind=getattr(info, "kind", "text") or "text", model_type=getattr(info, "model_type", "") or "",
                   config=getattr(info, "config", None) or {})


def vision_exclusion(vision: Any) -> str | None:
    """A regex (peft full-matches it against module names) for the VL modules that must NOT get
    LoRA: the vision tower unless it is tuned with LoRA, the projector unless it is."""
    tower_lora = getattr(vision, "vision_tower", "frozen") == "lora"
    projector_lora = getattr(vision, "projector", "frozen") == "lora"
    if tower_lora and projector_lora:
        return None
    if tower_lora:
        return rf".*\b{VISION_TOWER}\.{PROJECTOR}\b.*"
    if projector_lora:
        return rf".*\b{VISION_TOWER}\.(?!{PROJECTOR}\b).*"
    return rf".*\b{VISION_TOWER}\b.*"


def resolve_targets(targets: Targets, facts: ModelFacts, vision: Any = None) -> dict[str, Any]:
    """peft's ``target_modules`` / ``exclude_modules`` / ``modules_to_save`` for the settings.

    On a vision-language model ``all-linear`` would also catch the vision tower and projector:
    ``exclude_modules`` keeps LoRA off them unless the spec's ``vision`` section asks for it."""
    if targets.mode == "custom":
        target: list[str] | str = list(targets.custom)
    elif targets.mode == "attention":
        target = list(ATTENTION_LEAVES)
    else:
        target = "all-linear"
    out: dict[str, Any] = {"target_modules": target, "exclude_modules": None, "modules_to_save": None}
    if not facts.is_vision:
        return out
    tower, projector = getattr(vision, "vision_tower", "frozen"), getattr(vision, "projector", "frozen")
    if targets.mode == "attention":  # the vision side names its layers differently
        if tower == "lora":
            target.extend(VISION_ATTENTION_LEAVES)
        if projector == "lora":
            target.extend([f"{PROJECTOR}.mlp.0", f"{PROJECTOR}.mlp.2"])
    out["exclude_modules"] = vision_exclusion(vision)
    if projector == "full":
        out["modules_to_save"] = [PROJECTOR]  # the projector is small: train all of it
    return out


def targets_problems(targets: Targets, prefix: str) -> list[Problem]:
    problems = []
    if targets.mode == "custom" and not [t for t in targets.custom if t.strip()]:
        problems.append(Problem(f"{prefix}.targets.custom", "custom target modules are empty",
                                "list module names such as q_proj, v_proj, or choose all-linear"))
    return problems


# Leaf names of the linear layers of a decoder block ("all-linear" spelled out, for peft tuners whose
# configs cannot exclude modules: they get a regex that also keeps the vision side out).
BLOCK_LINEAR_LEAVES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "qkv_proj",
                       "gate_up_proj"]


def language_linear_regex(targets: Targets, facts: ModelFacts) -> str | list[str]:
    """``target_modules`` for tuners without ``exclude_modules`` (BEFT, VeRA): a list of leaf names
    on text models; on vision-language models a regex (peft full-matches a string) that only
    matches the language model's layers, never ``visual``."""
    import re

    if targets.mode == "custom":
        leaves = [t for t in targets.custom if t.strip()]
    else:
        leaves = list(ATTENTION_LEAVES) if targets.mode == "attention" else list(BLOCK_LINEAR_LEAVES)
    if not facts.is_vision:
        return leaves
    names = "|".join(re.escape(n) for n in leaves)
    return rf"^(?!.*\b{VISION_TOWER}\b).*\.({names})$"


def blocks_regex(first: int, last: int, extra: tuple[str, ...] = ()) -> str:
    """A regex (peft full-matches it) for decoder blocks ``first``..``last`` (both included) of a
    text or vision-language model (``model.layers.N`` / ``model.language_model.layers.N``), plus
    ``extra`` top-level module paths of the language model (``norm``, ``embed_tokens``)."""
    numbers = "|".join(str(i) for i in range(first, last + 1))
    parts = [rf"layers\.({numbers})"] + [e.replace(".", r"\.") for e in extra]
    return rf"^(?!.*\b{VISION_TOWER}\b)(.*\.)?({'|'.join(parts)})$"


def package_available(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


@dataclass(frozen=True)
class Method:
    """One PEFT method, as the studio sees it. Every method module builds exactly one."""

    name: str
    label: str
    settings_cls: type[MethodSettings]
    presets: dict[str, MethodSettings]
    default_preset: str
    explain: Explain
    default_learning_rate: float
    # validate(spec, total_steps | None) -> problems with the method's settings in the context of
    # the whole spec; total_steps (optimizer steps of the run) when the data is known
    validate: Callable[["RunSpec", int | None], list[Problem]]
    # build_peft_config(spec, model_info, total_steps) -> peft.PeftConfig
    build_peft_config: Callable[["RunSpec", Any, int], Any]
    # quantization_config(spec, model_info) -> transformers.BitsAndBytesConfig | None
    quantization_config: Callable[["RunSpec", Any], Any] = field(default=lambda spec, info: None)
    # prepare_model(model, spec): adjust a loaded base model before adapters are attached
    prepare_model: Callable[[Any, "RunSpec"], Any] = field(default=lambda model, spec: model)
    # callbacks(spec) -> TrainerCallbacks the method needs during training (AdaLoRA's allocator)
    callbacks: Callable[["RunSpec"], list[Any]] = field(default=lambda spec: [])
    # extra_loss(model, spec) -> a tensor added to each training step's loss, or None
    extra_loss: Callable[[Any, "RunSpec"], Any] | None = None
    # save_state(model, checkpoint_folder) / restore_state(model, checkpoint_folder) -> bool: state a
    # checkpoint needs beyond the Trainer's own to resume exactly (restore returns False if none saved)
    save_state: Callable[[Any, Any], None] | None = None
    restore_state: Callable[[Any, Any], bool] | None = None
    # estimator_fields(spec) -> the method's part of an EstimateRequest (method, rank, bits...)
    estimator_fields: Callable[["RunSpec"], dict[str, Any]] = field(default=lambda spec: {"method": spec.method.name})
    # model_problems(spec, facts) -> problems with this model (the worker's pre-flight reads its config)
    model_problems: Callable[["RunSpec", ModelFacts], list[Problem]] = field(default=lambda spec, facts: [])
    # device_problems(spec) -> problems only the machine that trains can see; the worker's pre-flight
    device_problems: Callable[["RunSpec"], list[Problem]] = field(default=lambda spec: [])
    # max_processes_without_gpu: 1 where the method cannot train in several CPU processes (None: any)
    max_processes_without_gpu: int | None = None
    # save_adapter(model, folder, run_dir): write the trained adapter (None: ``model.save_pretrained``);
    # PiSSA/OLoRA convert theirs to a plain LoRA that works on the unmodified base
    save_adapter: Callable[[Any, Any, Any], None] | None = None
    # padding_free: the method works on padding-free (flattened) batches; prompt methods prepend virtual
    # tokens per row, which a flattened batch does not have, so they keep padded batches
    padding_free: bool = True
    # vision: the method trains Qwen2.5-VL too (False: refused for vision-language models, for vision_refusal)
    vision: bool = True
    vision_refusal: str = "peft prepends its virtual tokens to the text, which breaks the image token positions"
    # family, as the field teaches it: "reparameterisation" | "additive" | "selective" | "full"
    family: str = "reparameterisation"
    # merges: the adapter folds into the base weights (a merged export exists); merge_note: what
    # a merged export of this method means (the export card; ``{dtype}`` is the merged weights' dtype)
    merges: bool = True
    merge_note: str = ""
    # requirements: packages that must be importable for this method
    requires: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        register_method(self)

    def preset(self, name: str | None = None) -> MethodSettings:
        return self.presets[name or self.default_preset].model_copy(deep=True)
