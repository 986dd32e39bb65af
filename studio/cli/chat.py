"""``python -m studio chat``: ask the base model and adapters one question, side by side.

    python -m studio chat --base builtin:smollm2-135m-instruct --adapter 3 "Who are you?"
    python -m studio chat --base builtin:tiny-qwen2.5-vl --image cat.jpg "What is in the picture?"

The message is answered in this process (the job runs inline, no worker needed) and saved as a chat
in the workspace, so the UI can reopen it. Each pane's answer goes to stdout under its label;
timings and problems go to stderr. Exit status 1 if the request was refused or every pane failed.
"""
from __future__ import annotations

import argparse
import sys

EXIT_FAILED = 1


def register(subparsers) -> None:
    p = subparsers.add_parser("chat", help="answer one prompt with a base model and its adapters, side by side")
    p.add_argument("prompt", help="the user message")
    p.add_argument("--base", required=True, help="base model: builtin:NAME, a local folder or a Hub id")
    p.add_argument("--adapter", type=int, action="append", default=[], metavar="ID",
                   help="adapter id (repeat for up to three); the base model always answers too")
    p.add_argument("--image", action="append", default=[], metavar="PATH",
                   help="attach an image (vision-language models)")
    p.add_argument("--system", default="", help="system prompt")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--repetition-penalty", type=float, default=1.1)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_chat)


def cmd_chat(args: argparse.Namespace) -> int:
    from jobs.worker import run_inline
    from storage.db import Database
    from studio.inference import service
    from studio.inference.errors import ChatError
    from studio.inference.settings import SettingsError

    settings = {"system_prompt": args.system, "max_new_tokens": args.max_new_tokens, "temperature": args.temperature,
                "top_p": args.top_p, "top_k": args.top_k, "repetition_penalty": args.repetition_penalty,
                "seed": args.seed}
    db = Database.open()
    try:
        try:
            chat_id = service.create_chat(db, args.base, args.adapter, settings, title=args.prompt[:60])
            job_id = service.send_message(db, chat_id, args.prompt, args.image)
        except (ChatError, SettingsError) as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_FAILED
        outcome = run_inline(db, job_id)
        answered = _print_panes(service.poll(db, job_id))
        if outcome.error and not answered:
            print(f"error: {outcome.error}", file=sys.stderr)
        print(f"(saved as chat {chat_id})", file=sys.stderr)
        return 0 if answered else EXIT_FAILED
    finally:
        db.dispose()


def _print_panes(state: dict) -> int:
    """Print every pane; returns how many answered."""
    answered = 0
    for key in state["order"]:
        pane = state["panes"][key]
        print(f"=== {pane['label']} ===")
        if pane.get("error"):
            print(f"[error] {pane['error']}")
        else:
            answered += 1
            print(pane["text"])
            meta = pane.get("meta") or {}
            if meta.get("ttft_s") is not None:
                tps = meta.get("tokens_per_s")
                print(f"({meta['new_tokens']} tokens, first after {meta['ttft_s']:.2f} s"
                      + (f", {tps:.1f} tokens/s" if tps else "") + ")", file=sys.stderr)
        print()
    return answered
