"""``python -m studio models ...``: list, inspect and prepare models.

    python -m studio models list
    python -m studio models inspect builtin:smollm2-135m-instruct
    python -m studio models inspect Qwen/Qwen2.5-VL-3B-Instruct --json
    python -m studio models prepare builtin:tiny-qwen2.5-vl      # prints the folder on stdout

Messages and progress go to stderr, results to stdout, so ``$(python -m studio models prepare X)``
gives the folder. Exit status 1 when the model cannot be found, inspected or prepared.
"""
from __future__ import annotations

import argparse
import json
import sys

EXIT_FAILED = 1


def register(subparsers) -> None:
    parser = subparsers.add_parser("models", help="list, inspect and prepare models")
    sub = parser.add_subparsers(dest="models_command", required=True)

    p = sub.add_parser("list", help="list the built-in models and whether they are prepared")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("inspect", help="describe a model from its config (no weights are read)")
    p.add_argument("ref", help="builtin:NAME, a local folder, or a Hugging Face Hub id (org/name)")
    p.add_argument("--json", action="store_true", help="print JSON, raw config included")
    p.add_argument("--trust-remote-code", action="store_true", help="opt in to this model's own code")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("prepare", help="build / download a model into a folder from_pretrained can load")
    p.add_argument("ref", help="builtin:NAME, a local folder, or a Hugging Face Hub id (org/name)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow a Hub model's own Python code (only for authors you trust)")
    p.set_defaults(func=cmd_prepare)


def cmd_list(args: argparse.Namespace) -> int:
    from studio.models import list_builtin, prepared_path

    rows = [(info, prepared_path(info.ref)) for info in list_builtin()]
    if args.json:
        print(json.dumps([{**i.to_dict(with_config=False), "prepared_path": str(p) if p else None}
                          for i, p in rows], indent=2))
        return 0
    print(f"{'REF':38} {'KIND':16} {'PARAMS':>8}  {'PREPARED':9} NAME")
    for info, path in rows:
        name = info.display_name
        print(f"{info.ref:38} {info.kind:16} {_millions(info.num_parameters):>8}  {'yes' if path else 'no':9} {name}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from studio.models import ModelError, inspect

    try:
        info = inspect(args.ref, trust_remote_code=args.trust_remote_code)
    except ModelError as e:
        return _fail(e)
    if args.json:
        print(json.dumps(info.to_dict(), indent=2))
        return 0
    for label, value in _summary(info):
        print(f"{label:22} {value}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from studio.models import ModelError, prepare

    with _ProgressBar() as bar:
        try:
            folder = prepare(args.ref, progress=bar.update, trust_remote_code=args.trust_remote_code)
        except ModelError as e:
            bar.close()
            return _fail(e)
    print(folder)
    return 0


def _summary(info) -> list[tuple[str, object]]:
    rows = [("ref", info.ref), ("name", info.display_name), ("source", info.source), ("kind", info.kind),
            ("architecture", info.architecture), ("model_type", info.model_type),
            ("parameters", f"{info.num_parameters:,}" if info.num_parameters else "unknown"),
            ("hidden_size", info.hidden_size), ("layers", info.num_layers),
            ("attention heads", f"{info.num_attention_heads} (KV {info.num_kv_heads})"),
            ("intermediate_size", info.intermediate_size), ("vocab_size", info.vocab_size),
            ("max positions", info.max_position_embeddings), ("saved dtype", info.dtype)]
    if info.vision:
        rows.append(("vision tower", ", ".join(f"{k}={v}" for k, v in info.vision.items())))
    if info.requires_remote_code:
        trusted = "" if info.trust_remote_code else " (not trusted: pass --trust-remote-code)"
        rows.append(("remote code", "required" + trusted))
    if info.is_test_model:
        rows.append(("TEST MODEL", "random weights: output is gibberish"))
    rows.append(("description", info.description))
    return rows


def _millions(n: int | None) -> str:
    return f"{n / 1e6:.1f}M" if n else "?"


def _fail(error: Exception) -> int:
    print(f"error: {error}", file=sys.stderr)
    return EXIT_FAILED


class _ProgressBar:
    """Reports ``progress(fraction, message)`` on stderr: a tqdm bar on a terminal, one line per
    stage otherwise (logs, CI), so redirected output stays readable."""

    def __enter__(self):
        self._bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=100, file=sys.stderr, bar_format="{percentage:3.0f}%|{bar:20}| {desc}")
        return self

    def update(self, fraction: float, message: str) -> None:
        if self._bar is None:
            print(f"[{fraction:4.0%}] {message}", file=sys.stderr, flush=True)
            return
        self._bar.set_description_str(message, refresh=False)
        self._bar.update(max(0, round(fraction * 100) - self._bar.n))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __exit__(self, *exc) -> None:
        self.close()
