"""The Export tab's GGUF choice, driven through gradio_client on the real app (nothing is built:
the worker is not running, so requests stay queued), and the UI process staying torch-free."""
from __future__ import annotations

import subprocess
import sys

import pytest
from gradio_client import Client

from studio.export import service
from tests.export.helpers import add_adapter
from ui.app import serve
from ui.i18n import EN, ZH


@pytest.fixture
def adapters(db, made_adapters):
    """(text adapter id, vision-language adapter id), in the database before the app renders."""
    return add_adapter(db, made_adapters["lora"], "lora"), add_adapter(db, made_adapters["vl_lora"], "vl_lora")


@pytest.fixture
def client(db, adapters):
    demo = serve(db, "127.0.0.1", None, quiet=True)
    try:
        yield Client(demo.local_url, verbose=False)
    finally:
        demo.close()


def test_export_tab_queues_a_gguf_export_and_refuses_a_vision_language_model(db, client, adapters):
    text_id, vl_id = adapters

    gguf_visible, shard_visible, adapter_choice = client.predict("gguf", text_id, api_name="/export_kind_changed")
    assert gguf_visible["visible"] is True and shard_visible["visible"] is False
    assert adapter_choice["value"] == text_id  # a text LoRA stays chosen: GGUF can be made of it

    message, table, _ = client.predict(text_id, "gguf", "auto", "2GB", "f16", api_name="/start_export")
    export = service.list_exports(db, adapter_id=text_id)[0]
    assert message == f"Export #{export.id} queued."
    assert export.kind == "gguf" and export.options["gguf_type"] == "f16"
    assert table["data"][0][2] == "gguf f16"

    message, _, _ = client.predict(vl_id, "gguf", "auto", "2GB", "q8_0", api_name="/start_export")
    assert message.startswith("⚠️") and "mmproj" in message and "merged model" in message
    assert service.list_exports(db, adapter_id=vl_id) == []


def test_gguf_strings_exist_in_both_languages():
    import ui.tabs.export  # noqa: F401 - registers the tab's strings

    keys = [k for k in EN if k.startswith("ex.gguf") or k.startswith("ex.kind_")]
    assert len(keys) >= 8
    assert all(ZH.get(k) and ZH[k] != EN[k] for k in keys)


def test_ui_side_checks_of_a_gguf_request_do_not_import_torch():
    code = ("import sys, ui.tabs.export; from studio.export import service; from studio.models import SMOLLM2, TINY_QWEN_VL\n"
            "service.check_gguf_base(SMOLLM2)\n"
            "try:\n    service.check_gguf_base(TINY_QWEN_VL)\nexcept Exception as e:\n    print(type(e).__name__)\n"
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["GgufUnsupportedError", "False", "False"], out.stderr[-2000:]
