"""Console logging for the long-running processes (launcher, worker, job runner)."""
from __future__ import annotations

import logging
import sys

NOISY = ("alembic", "httpx", "urllib3", "matplotlib", "PIL")


def configure(tag: str, stream=sys.stderr) -> None:
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {tag} %(levelname)s %(name)s: %(message)s",
                        stream=stream, force=True)
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
