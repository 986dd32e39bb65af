"""The export job a worker runs (in a child process): merge or copy, verify, write the card, zip.

Reads top to bottom: ``run_export_job`` plans from the rows, builds everything inside a staging
folder under ``tmp/`` (renamed to ``exports/<id>/`` only when complete and verified), then records
the archive's size and SHA-256 on the row. A failure or a cancel removes the staging folder; a
killed process cannot, so the staging path is recorded in the job's progress and
``on_export_job_finished`` (run by the worker or the reaper) removes it.
"""
from __future__ import annotations

import gc
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.context import JobContext
from storage.db import Database
from storage.models import Adapter, Export, Job, JobStatus, ModelEntry, Run
from studio.export import card, merge, ollama, package, service, to_gguf, verify
from studio.export.errors import ExportError, ExportNotFoundError, VerificationFailedError
from studio.export.options import GGUF, MERGED, ExportOptions


@dataclass
class Plan:
    export_id: int
    adapter: Adapter
    adapter_path: Path
    options: ExportOptions
    folder_name: str
    trust_remote_code: bool


def run_export_job(ctx: JobContext) -> dict[str, Any]:
    plan = _plan(ctx.db, int(ctx.payload["export_id"]))
    final = ctx.workspace.export_dir(plan.export_id)
    if final.exists():
        raise ExportError(f"{final} already exists; delete export {plan.export_id} and start a new one")
    _set_status(ctx.db, plan.export_id, JobStatus.RUNNING)
    with ctx.workspace.staging_dir(final) as stage:
        ctx.progress(0.0, f"export {plan.export_id}: {plan.options.kind} {plan.folder_name}", staging=str(stage))
        folder = stage / plan.folder_name
        folder.mkdir()
        if plan.options.kind == MERGED:
            result = _build_merged(ctx, plan, folder)
        elif plan.options.kind == GGUF:
            result = _build_gguf(ctx, plan, folder, work=stage / "merged-work")
        else:
            result = _build_adapter(ctx, plan, folder)
        result["folder"] = ctx.workspace.relative(final / plan.folder_name).replace("\\", "/")
        if not result["passed"]:
            _record_failed_verification(ctx.db, plan.export_id, result)
            raise VerificationFailedError(_failure_message(result))
        card.write(_card_facts(ctx.db, plan, result), folder)
        archive = _package(ctx, folder, stage / f"{plan.folder_name}.zip", result)
    archive = final / archive.name
    _record_success(ctx.db, plan.export_id, ctx.workspace.relative(archive), result)
    ctx.progress(1.0, f"export {plan.export_id} ready: {archive.name} ({result['size_bytes'] / 2**20:.1f} MiB)")
    return {"export_id": plan.export_id, "path": str(archive), "sha256": result["sha256"],
            "max_abs_diff": result.get("max_abs_diff")}


def on_export_job_finished(db: Database, job: Job) -> None:
    """Bring the Export row in line with how its job ended; failed/cancelled leave no folder."""
    export_id = (job.payload or {}).get("export_id")
    if export_id is not None:
        service.finish_from_job(db, int(export_id), job)


# -- planning -------------------------------------------------------------------------------------
def _plan(db: Database, export_id: int) -> Plan:
    with db.session() as s:
        export = s.get(Export, export_id)
        if export is None:
            raise ExportNotFoundError(f"export {export_id} does not exist")
        adapter = s.get(Adapter, export.adapter_id) if export.adapter_id is not None else None
        if adapter is None:
            raise ExportNotFoundError(f"export {export_id}: its adapter was deleted")
        options = ExportOptions.from_dict({**(export.verification or {}).get("options", {}), "kind": export.kind})
        trust = _trust_remote_code(s, adapter)
    return Plan(export_id=export_id, adapter=adapter, adapter_path=service.adapter_folder(db, adapter),
                options=options, folder_name=service.folder_name(adapter, options.label), trust_remote_code=trust)


def _trust_remote_code(s: Any, adapter: Adapter) -> bool:
    """The per-model opt-in the run was trained with (never on by default)."""
    run = s.get(Run, adapter.run_id) if adapter.run_id is not None else None
    if run is not None and "trust_remote_code" in (run.spec or {}):
        return bool(run.spec["trust_remote_code"])
    entry = s.query(ModelEntry).filter_by(ref=adapter.base_model_ref).one_or_none()
    return bool(entry and entry.trust_remote_code)


# -- merged ---------------------------------------------------------------------------------------
def _build_merged(ctx: JobContext, plan: Plan, folder: Path) -> dict[str, Any]:
    from studio.models import inspect, prepare

    timings: dict[str, float] = {}
    clock = _Clock(timings)
    ref = plan.adapter.base_model_ref
    info = inspect(ref, trust_remote_code=plan.trust_remote_code)
    ctx.progress(0.02, f"preparing the base model {ref}")
    base_path = prepare(ref, trust_remote_code=plan.trust_remote_code)
    dtype = merge.resolve_dtype(plan.options.dtype, base_path)
    device = merge.resolve_device(plan.options.device)
    ctx.check_cancel()

    with clock("load"):
        ctx.progress(0.05, f"loading {info.display_name} in {dtype} on {device} with the {plan.adapter.method} adapter")
        model = merge.load_adapter_on_base(base_path, plan.adapter_path, info.kind, dtype, device,
                                           plan.trust_remote_code)
        processor = merge.save_tokenizer(base_path, plan.adapter_path, info.kind, folder, plan.trust_remote_code)
    ctx.check_cancel()
    with clock("reference"):
        ctx.progress(0.25, "computing reference outputs of the adapter on the base")
        probes = verify.build_probes(processor, info.kind)
        reference = verify.run_probes(model, probes, with_base=True)
    ctx.check_cancel()
    with clock("merge"):
        ctx.progress(0.4, "merging the adapter into the base weights")
        merged = merge.merge(model)
    with clock("save"):
        ctx.progress(0.45, f"writing safetensors shards (at most {plan.options.shard_size} each)")
        shards = merge.save_merged(merged, folder, plan.options.shard_size)
    del model, merged
    _free_memory()
    ctx.check_cancel()

    with clock("verify"):
        ctx.progress(0.6, "reloading the merged folder with plain transformers and comparing outputs")
        result = _verify_reload(folder, info.kind, dtype, device, probes, reference, plan.trust_remote_code)
    result.update(kind=MERGED, dtype=dtype, device=device, shard_size=plan.options.shard_size, shards=shards,
                  base_model_ref=ref, model_kind=info.kind, base_display_name=info.display_name, timings_s=timings)
    return result


def _verify_reload(folder: Path, kind: str, dtype: str, device: str, probes: list[verify.Probe],
                   reference: list[verify.ProbeOutput], trust_remote_code: bool) -> dict[str, Any]:
    from studio.models import load_model, load_tokenizer_or_processor

    exported_processor = load_tokenizer_or_processor(folder, kind, trust_remote_code=trust_remote_code)
    inputs_match = verify.same_inputs(probes, verify.build_probes(exported_processor, kind))
    reloaded = load_model(folder, kind, dtype=dtype, device_map=None if device == "cpu" else device,
                          trust_remote_code=trust_remote_code)
    reloaded.eval()
    candidate = verify.run_probes(reloaded, probes)
    del reloaded
    _free_memory()
    result = verify.compare(reference, candidate, dtype, probes)
    result["inputs_match"] = inputs_match
    result["checks"]["exported_tokenizer_encodes_like_the_base"] = inputs_match
    result["passed"] = all(result["checks"].values())
    return result


# -- GGUF -----------------------------------------------------------------------------------------
def _build_gguf(ctx: JobContext, plan: Plan, folder: Path, work: Path) -> dict[str, Any]:
    """Merge and verify as for a merged export (into ``work``, never packaged), write the GGUF from
    that folder, read it back with transformers' GGUF loader and compare, then the Modelfile."""
    from studio.models import prepare

    gguf_type = plan.options.gguf_type
    ctx.progress(0.01, "checking that the model and its tokenizer can be written as GGUF")
    base_path = prepare(plan.adapter.base_model_ref, trust_remote_code=plan.trust_remote_code)
    _check_gguf_source(base_path, merge.tokenizer_source(base_path, plan.adapter_path))
    work.mkdir()
    result = _build_merged(_Span(ctx, 0.02, 0.45), plan, work)
    merged_summary = {k: result.get(k) for k in ("dtype", "max_abs_diff", "tolerance", "greedy_match", "passed")}
    if not result["passed"]:
        return {**result, "kind": GGUF, "gguf_type": gguf_type,
                "error": f"the merged model (before GGUF) failed verification: {_failure_message(result)}"}
    timings = result["timings_s"]
    clock = _Clock(timings)
    gguf_name = f"{plan.folder_name.removesuffix('-' + plan.options.label)}-{gguf_type}.gguf"
    with clock("gguf_write"):
        conversion = to_gguf.write(work, folder / gguf_name, gguf_type, name=plan.folder_name,
                                   on_tensor=_tensor_progress(ctx, gguf_name))
    ctx.check_cancel()
    with clock("gguf_verify"):
        ctx.progress(0.62, f"reading {gguf_name} back with transformers and comparing logits with the merged model")
        check = _verify_gguf(work, folder, gguf_name, gguf_type, result["device"])
    modelfile_info = _write_modelfile(ctx, plan, work, folder, gguf_name)
    shutil.rmtree(work)  # the merged safetensors were the source, not part of this export
    return {**check, "kind": GGUF, "gguf_type": gguf_type, "gguf_file": gguf_name,
            "gguf_size_bytes": (folder / gguf_name).stat().st_size, "conversion": conversion,
            "merged_verification": merged_summary, "modelfile": modelfile_info, "dtype": result["dtype"],
            "device": result["device"], "base_model_ref": result["base_model_ref"], "model_kind": result["model_kind"],
            "base_display_name": result["base_display_name"], "timings_s": timings}


def _check_gguf_source(base_path: Path, tokenizer_path: Path) -> None:
    """Refuse before the (slow) merge what the converter cannot write."""
    to_gguf.check_config(json.loads((base_path / "config.json").read_text(encoding="utf-8")))
    tokenizer_json = tokenizer_path / "tokenizer.json"
    if tokenizer_json.is_file():
        to_gguf.check_tokenizer_json(json.loads(tokenizer_json.read_text(encoding="utf-8")))


def _tensor_progress(ctx: JobContext, gguf_name: str):
    def on_tensor(done: int, total: int, name: str) -> None:
        ctx.check_cancel()  # rate-limited by the context itself
        if done == total or done % 16 == 0:
            ctx.progress(0.45 + 0.15 * done / total, f"writing {gguf_name}: tensor {done} of {total} ({name})")
    return on_tensor


def _verify_gguf(work: Path, folder: Path, gguf_name: str, gguf_type: str, device: str) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from studio.models import load_model

    studio_tokenizer = AutoTokenizer.from_pretrained(work)
    gguf_tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_name)
    tokens = verify.compare_tokenizers(studio_tokenizer, gguf_tokenizer)
    ids = [verify.chat_ids(studio_tokenizer, conv) for conv in verify.gguf_conversations()]
    device_map = None if device == "cpu" else device
    merged = load_model(work, "text", dtype="float32", device_map=device_map).eval()
    reference = verify.gguf_logits(merged, ids)
    del merged
    _free_memory()
    reread = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_name, dtype=torch.float32,
                                                  device_map=device_map).eval()
    candidate = verify.gguf_logits(reread, ids)
    del reread
    _free_memory()
    result = verify.compare_gguf(reference, candidate, gguf_type)
    result["method"] = ("the GGUF read back with transformers' GGUF loader; logits on chat prompts vs the merged "
                        "safetensors model (both float32); prompt ids of the GGUF's tokenizer vs the studio's")
    result["tokenizer"] = tokens
    result["checks"]["gguf_tokenizer_gives_the_studio_ids"] = not tokens["mismatches"]
    result["checks"]["gguf_chat_template_is_the_studio_one"] = tokens["same_chat_template"]
    result["passed"] = all(result["checks"].values())
    if tokens["mismatches"]:
        result["error"] = (f"the GGUF's tokenizer gives different ids from the studio's on "
                           f"{len(tokens['mismatches'])} of {tokens['prompts']} prompts (first: {tokens['mismatches'][0]})")
    return result


def _write_modelfile(ctx: JobContext, plan: Plan, work: Path, folder: Path, gguf_name: str) -> dict[str, Any]:
    from transformers import AutoTokenizer

    text, info = ollama.modelfile(gguf_name, AutoTokenizer.from_pretrained(work), _run_system_prompt(ctx.db, plan))
    (folder / "Modelfile").write_text(text, encoding="utf-8")
    return info


def _run_system_prompt(db: Database, plan: Plan) -> str | None:
    """The system message shared by every training row of the adapter's run, if there is one."""
    from storage.models import Dataset

    with db.session() as s:
        run = s.get(Run, plan.adapter.run_id) if plan.adapter.run_id is not None else None
        dataset = s.get(Dataset, run.dataset_id) if run is not None and run.dataset_id is not None else None
        path = dataset.path if dataset is not None else None
    if not path:
        return None
    try:
        return ollama.shared_system_prompt(db.workspace.confine(path) / "train.jsonl")
    except (OSError, ValueError, PermissionError):
        return None


class _Span:
    """A JobContext whose progress 0..1 maps onto [start, end] of the whole job's bar."""

    def __init__(self, ctx: JobContext, start: float, end: float):
        self._ctx, self._start, self._end = ctx, start, end

    def progress(self, fraction: float, message: str, **extra: Any) -> None:
        self._ctx.progress(self._start + fraction * (self._end - self._start), message, **extra)

    def check_cancel(self) -> None:
        self._ctx.check_cancel()


# -- adapter alone --------------------------------------------------------------------------------
def _build_adapter(ctx: JobContext, plan: Plan, folder: Path) -> dict[str, Any]:
    ctx.progress(0.1, "copying the adapter files")
    names = merge.copy_adapter(plan.adapter_path, folder)
    ctx.check_cancel()
    ctx.progress(0.4, "checking the copied files against the trained adapter")
    result = verify.compare_adapter_copy(plan.adapter_path, folder, names)
    model_kind, display_name = _describe_base(plan)
    result.update(kind="adapter", base_model_ref=plan.adapter.base_model_ref, model_kind=model_kind,
                  base_display_name=display_name)
    if not result["passed"]:
        result["error"] = (f"copied adapter files differ from the trained ones: {result['mismatched']}"
                           if result["mismatched"] else f"the adapter config does not parse: {result['config_error']}")
    return result


def _describe_base(plan: Plan) -> tuple[str, str]:
    """(model kind, display name) for the card. Packaging an adapter must not need its base, so a
    base the registry cannot describe (a Hub id offline, a moved folder) falls back to the
    adapter's own config: Qwen2.5-VL adapters target modules under ``language_model``/``visual``."""
    from studio.models import ModelError, inspect

    try:
        info = inspect(plan.adapter.base_model_ref, trust_remote_code=plan.trust_remote_code)
        return info.kind, info.display_name
    except ModelError:
        config = (plan.adapter_path / "adapter_config.json").read_text(encoding="utf-8")
        vl = "language_model" in config or "visual" in config
        return ("vision-language" if vl else "text"), plan.adapter.base_model_ref


# -- card, archive, rows --------------------------------------------------------------------------
def _card_facts(db: Database, plan: Plan, result: dict[str, Any]) -> card.CardFacts:
    facts = card.gather_facts(db, plan.adapter, kind=plan.options.kind, model_kind=result["model_kind"],
                              folder_name=plan.folder_name, base_display_name=result["base_display_name"],
                              dtype=result.get("dtype"), shard_size=result.get("shard_size"),
                              gguf_type=result.get("gguf_type"), gguf_file=result.get("gguf_file"))
    facts.verification = result
    return facts


def _package(ctx: JobContext, folder: Path, archive: Path, result: dict[str, Any]) -> Path:
    total = max(1, package.folder_size(folder))
    done, last_report = 0, 0.0
    started = time.monotonic()

    def on_bytes(n: int) -> None:
        nonlocal done, last_report
        done += n
        ctx.check_cancel()  # itself reads the database at most once a second
        if time.monotonic() - last_report >= 1.0:  # one progress write a second, not one per chunk
            last_report = time.monotonic()
            ctx.progress(0.8 + 0.18 * done / total,
                         f"packaging {archive.name}: {done / 2**20:.0f} of {total / 2**20:.0f} MiB")

    ctx.progress(0.8, f"packaging {archive.name}")
    package.write_zip(folder, archive, on_bytes=on_bytes)
    ctx.progress(0.98, "computing the archive's SHA-256")
    result.update(package.describe_archive(archive))
    result.setdefault("timings_s", {})["package"] = round(time.monotonic() - started, 2)
    return archive


def _set_status(db: Database, export_id: int, status: str) -> None:
    with db.session() as s:
        s.get(Export, export_id).status = status


def _record_failed_verification(db: Database, export_id: int, result: dict[str, Any]) -> None:
    with db.session() as s:
        export = s.get(Export, export_id)
        export.verified = False
        export.verification = {**(export.verification or {}), **_jsonable(result),
                               "error": result.get("error") or _failure_message(result)}


def _record_success(db: Database, export_id: int, relative_archive: str, result: dict[str, Any]) -> None:
    with db.session() as s:
        export = s.get(Export, export_id)
        export.status = JobStatus.SUCCEEDED
        export.verified = True
        export.path = relative_archive
        export.size_bytes = result["size_bytes"]
        export.sha256 = result["sha256"]
        export.verification = {**(export.verification or {}), **_jsonable(result)}


def _failure_message(result: dict[str, Any]) -> str:
    if result.get("error"):
        return f"verification failed: {result['error']}"
    failed = [name for name, ok in (result.get("checks") or {}).items() if not ok]
    return (f"verification failed ({', '.join(failed) or 'see the numbers'}): max logit difference "
            f"{result.get('max_abs_diff', float('nan')):.3g} (tolerance {result.get('tolerance', float('nan')):.3g} "
            f"for {result.get('dtype')}), top-1 agreement {result.get('top1_agreement', float('nan')):.3f}; "
            "the export is not offered")


def _jsonable(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k not in ("size_bytes", "sha256")}


def _free_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover - torch is there whenever a model was loaded
        pass


class _Clock:
    """``with clock("merge"): ...`` records seconds per step in ``timings``."""

    def __init__(self, timings: dict[str, float]):
        self.timings = timings

    def __call__(self, name: str) -> "_Clock":
        self._name = name
        return self

    def __enter__(self) -> None:
        self._start = time.monotonic()

    def __exit__(self, *exc: Any) -> None:
        self.timings[self._name] = round(time.monotonic() - self._start, 2)
