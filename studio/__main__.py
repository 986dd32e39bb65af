"""``python -m studio ...``: the studio's services from the command line.

Each module in ``studio/cli/`` adds its own subcommand with ``register(subparsers)`` and sets
``func`` on its parser; this file only collects them.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import studio.cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m studio", description="Finetune Studio from the command line")
    parser.add_argument("--workspace", help="workspace folder (default: $FTS_WORKSPACE or ./workspace)")
    parser.add_argument("--db-url", help="SQLAlchemy database URL (default: SQLite in the workspace)")
    sub = parser.add_subparsers(dest="command", required=True)
    for mod in sorted(pkgutil.iter_modules(studio.cli.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"studio.cli.{mod.name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.workspace or args.db_url:
        from storage.settings import Settings

        Settings.resolve(args.workspace, args.db_url).export_to_env()
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
