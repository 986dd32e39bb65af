"""``python -m studio export``: merge a trained adapter into its base model, or package it alone.

    python -m studio export run:3 --merged --dtype bf16          # queue it; a running worker builds it
    python -m studio export adapter:5 --adapter --inline          # build it now, in this process
    python -m studio export 3 --merged --shard-size 500MB --inline
    python -m studio export run:3 --gguf q8_0 --inline            # one GGUF file + Ollama Modelfile

RUN_OR_ADAPTER is ``run:ID`` (that run's newest adapter), ``adapter:ID``, or a bare number (a run
id). With ``--inline`` the export is built and verified here and the archive's path, size and
SHA-256 are printed; progress goes to stderr. Exit status: 0 done (or queued), 1 the export
failed or was not verified, 2 the request was refused.
"""
from __future__ import annotations

import argparse
import json
import sys

EXIT_FAILED, EXIT_REFUSED = 1, 2


def register(subparsers) -> None:
    from studio.export.options import DEFAULT_SHARD_SIZE, DEVICES, GGUF_TYPES

    p = subparsers.add_parser("export", help="merge an adapter into its base model, or package the adapter alone")
    p.add_argument("target", metavar="RUN_OR_ADAPTER", help="run:ID, adapter:ID, or a run id")
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--merged", dest="kind", action="store_const", const="merged",
                      help="a standalone model: the adapter merged into the full-precision base")
    kind.add_argument("--adapter", dest="kind", action="store_const", const="adapter",
                      help="the adapter alone (load it on the base with peft)")
    kind.add_argument("--gguf", dest="gguf_type", metavar="TYPE", type=str.lower, choices=GGUF_TYPES,
                      help=f"the merged model as one GGUF file for llama.cpp / Ollama / LM Studio: "
                           f"{', '.join(GGUF_TYPES)} (text models: Llama family, Qwen2/2.5)")
    p.add_argument("--dtype", default="auto",
                   help="weights of the merged model: auto (the base's), bf16, fp16 or fp32 (default auto)")
    p.add_argument("--shard-size", default=DEFAULT_SHARD_SIZE,
                   help=f"largest safetensors shard, e.g. 500MB or 4GiB (default {DEFAULT_SHARD_SIZE})")
    p.add_argument("--device", default="auto", choices=DEVICES, help="where to merge (default: CUDA when present)")
    p.add_argument("--inline", action="store_true", help="build it now in this process instead of queueing it")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from storage.db import Database
    from studio.export import service
    from studio.export.errors import ExportError
    from studio.export.options import ExportOptionsError

    db = Database.open()
    try:
        try:
            adapter_id = service.resolve_adapter(db, args.target)
            kind = "gguf" if args.gguf_type else args.kind
            export_id = service.start_export(db, adapter_id, kind=kind, dtype=args.dtype,
                                             shard_size=args.shard_size, device=args.device, gguf_type=args.gguf_type)
        except (ExportError, ExportOptionsError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_REFUSED
        if not args.inline:
            info = service.get_export(db, export_id)
            print(f"queued export {export_id} (job {info.job_id}); a running worker will build it. "
                  f"Follow it in the UI, or re-run with --inline to build it here.")
            return 0
        return _run_inline(db, export_id, as_json=args.json)
    finally:
        db.dispose()


def _run_inline(db, export_id: int, as_json: bool) -> int:
    from jobs import logsetup
    from jobs.worker import run_inline
    from studio.export import service

    logsetup.configure("export")  # the job's progress messages, on stderr
    run_inline(db, service.get_export(db, export_id).job_id)
    info = service.get_export(db, export_id)
    summary = _summary(db, info)
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        _print_summary(summary)
    return 0 if info.downloadable else EXIT_FAILED


def _summary(db, info) -> dict:
    v = info.verification
    out = {"export_id": info.id, "kind": info.kind, "status": info.status, "verified": info.verified,
           "error": info.error if not info.downloadable else None}
    if info.downloadable:
        out.update(archive=str(db.workspace.root / info.path), folder=str(db.workspace.root / info.folder),
                   size_bytes=info.size_bytes, sha256=info.sha256)
    for key in ("dtype", "max_abs_diff", "tolerance", "greedy_match", "gguf_type", "gguf_file", "top1_agreement",
                "positions", "timings_s"):
        if key in v:
            out[key] = v[key]
    return out


def _print_summary(s: dict) -> None:
    if s["status"] != "succeeded" or not s["verified"]:
        print(f"export {s['export_id']} {s['status']}: {s.get('error') or 'not verified'}", file=sys.stderr)
        return
    print(f"export {s['export_id']} ({s['kind']}) verified")
    print(f"  archive: {s['archive']} ({s['size_bytes'] / 2**20:.1f} MiB)")
    print(f"  sha256:  {s['sha256']}")
    print(f"  folder:  {s['folder']}")
    if s.get("gguf_file"):
        tolerance = f", tolerance {s['tolerance']:.2e}" if s.get("tolerance") is not None else ""
        print(f"  gguf:    {s['gguf_file']} ({s['gguf_type']}) read back with transformers: max logit difference to "
              f"the merged model {s['max_abs_diff']:.3g}{tolerance}; top-1 agreement {s['top1_agreement']:.1%} "
              f"over {s['positions']} positions; tokenizer ids identical")
        print("  run it:  ollama create NAME -f Modelfile   (in the folder; see README.md for llama.cpp, LM Studio)")
    elif "max_abs_diff" in s:
        print(f"  max logit difference {s['max_abs_diff']:.2e} ({s['dtype']}, tolerance {s['tolerance']:.2e}); "
              f"greedy outputs {'identical' if s.get('greedy_match') else 'differ'}")
