"""The real app served on loopback for gradio_client tests."""
from __future__ import annotations

import pytest
from gradio_client import Client

from ui.app import serve


@pytest.fixture
def served(db):
    demo = serve(db, "127.0.0.1", None, quiet=True)
    try:
        yield demo
    finally:
        demo.close()


@pytest.fixture
def client(served):
    return Client(served.local_url, verbose=False)
