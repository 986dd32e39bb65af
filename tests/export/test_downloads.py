"""Downloads are addressed by export id only: refusals in the service, and the HTTP route behind
Gradio's login (a real Gradio 6 app, a real server, real cookies)."""
from __future__ import annotations

import hashlib
import os
import socket

import gradio as gr
import httpx
import pytest

from storage.models import Export, JobStatus
from studio.export import service
from studio.export.errors import ExportNotFoundError, ExportNotReadyError, ExportPathRefusedError
from ui.downloads import download_button_value, download_url, mount_downloads

CONTENT = os.urandom(300_000)  # > one 64 KiB chunk, so the response really streams


def finished_export(db, *, status=JobStatus.SUCCEEDED, verified=True, content=CONTENT, name="model.zip") -> int:
    """An export row with its archive on disk, as a successful export job leaves it."""
    with db.session() as s:
        export = Export(kind="adapter", status=status, verified=verified)
        s.add(export)
        s.flush()
        export_id = export.id
    folder = db.workspace.export_dir(export_id)
    folder.mkdir(parents=True)
    (folder / name).write_bytes(content)
    set_row(db, export_id, path=f"exports/{export_id}/{name}", size_bytes=len(content),
            sha256=hashlib.sha256(content).hexdigest())
    return export_id


def set_row(db, export_id: int, **values) -> None:
    with db.session() as s:
        export = s.get(Export, export_id)
        for key, value in values.items():
            setattr(export, key, value)


# -- the service ------------------------------------------------------------------------------------
def test_a_finished_verified_export_is_served_from_its_folder(db):
    export_id = finished_export(db)
    path = service.download_path(db, export_id)
    assert path == db.workspace.export_dir(export_id) / "model.zip" and path.read_bytes() == CONTENT
    assert download_button_value(db, export_id) == str(path)


@pytest.mark.parametrize("export_id", [0, 987654, -1])
def test_made_up_ids_are_refused(db, export_id):
    with pytest.raises(ExportNotFoundError):
        service.download_path(db, export_id)


def test_unfinished_failed_and_unverified_exports_are_refused(db, tmp_path):
    adapter_folder = db.workspace.run_dir(1) / "adapter"
    adapter_folder.mkdir(parents=True)
    (adapter_folder / "adapter_config.json").write_text("{}")
    from storage.models import Adapter

    with db.session() as s:
        s.add(Adapter(id=1, name="a", method="lora", base_model_ref="builtin:smollm2-135m-instruct",
                      path="runs/1/adapter"))
    queued = service.start_export(db, 1, kind="adapter")
    assert service.get_export(db, queued).status == JobStatus.QUEUED
    cases = [queued, finished_export(db, status=JobStatus.FAILED), finished_export(db, verified=False),
             finished_export(db, verified=None), finished_export(db, status=JobStatus.RUNNING)]
    for export_id in cases:
        with pytest.raises(ExportNotReadyError):
            service.download_path(db, export_id)


def test_tampered_rows_are_refused(db, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("not yours")
    other = finished_export(db)
    export_id = finished_export(db)
    folder = db.workspace.export_dir(export_id)
    (folder / "link.zip").symlink_to(outside)
    for path in (str(outside), "/etc/passwd", "studio.db", f"exports/{export_id}/../../studio.db",
                 f"exports/{other}/model.zip", f"exports/{export_id}", f"exports/{export_id}/link.zip",
                 "../" * 12 + "etc/passwd"):
        set_row(db, export_id, path=path)
        with pytest.raises(ExportPathRefusedError):
            service.download_path(db, export_id)


def test_an_export_folder_replaced_by_a_symlink_is_refused(db, tmp_path):
    export_id = finished_export(db)
    folder = db.workspace.export_dir(export_id)
    elsewhere = tmp_path / "elsewhere"
    folder.rename(elsewhere)
    folder.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ExportPathRefusedError):
        service.download_path(db, export_id)


def test_an_archive_that_changed_after_verification_is_refused(db):
    export_id = finished_export(db)
    (db.workspace.export_dir(export_id) / "model.zip").write_bytes(CONTENT + b"appended")
    with pytest.raises(ExportNotReadyError, match="changed size"):
        service.download_path(db, export_id)
    (db.workspace.export_dir(export_id) / "model.zip").unlink()
    with pytest.raises(ExportNotReadyError, match="missing"):
        service.download_path(db, export_id)


# -- the HTTP route ---------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def launched(db):
    """The studio's way of serving: demo.launch(prevent_thread_lock=True), then mount_downloads."""
    apps = []

    def launch(auth=None):
        with gr.Blocks() as demo:
            gr.Markdown("exports")
        port = _free_port()
        demo.launch(server_name="127.0.0.1", server_port=port, auth=auth, prevent_thread_lock=True, quiet=True)
        mount_downloads(demo.app, db)
        apps.append(demo)
        return f"http://127.0.0.1:{port}"

    yield launch
    for demo in apps:
        demo.close()


def test_route_needs_gradio_login_when_auth_is_on(db, launched):
    ok = finished_export(db)
    url = launched(auth=("ada", "lovelace"))
    with httpx.Client(base_url=url, timeout=30) as client:
        assert client.get(f"/{download_url(ok)}").status_code == 401
        assert client.post("/login", data={"username": "ada", "password": "wrong"}).status_code == 400
        assert client.get(f"/{download_url(ok)}").status_code == 401
        assert client.post("/login", data={"username": "ada", "password": "lovelace"}).status_code == 200
        response = client.get(f"/{download_url(ok)}")
        assert response.status_code == 200 and response.content == CONTENT
        assert 'filename="model.zip"' in response.headers["content-disposition"]
        assert "content-encoding" not in response.headers  # streamed as is, never recompressed
        ranged = client.get(f"/{download_url(ok)}", headers={"Range": "bytes=100-199"})
        assert ranged.status_code == 206 and ranged.content == CONTENT[100:200]
        assert client.get("/download/export/424242").status_code == 404
        unverified = finished_export(db, verified=False)
        assert client.get(f"/{download_url(unverified)}").status_code == 409
        set_row(db, unverified, verified=True, path="studio.db")
        assert client.get(f"/{download_url(unverified)}").status_code == 403
        assert client.get("/download/export/..%2F..%2Fstudio.db").status_code in (404, 422)
        client.get("/logout")
        assert client.get(f"/{download_url(ok)}").status_code == 401


def test_route_is_open_when_the_app_has_no_login(db, launched):
    ok = finished_export(db)
    url = launched()
    response = httpx.get(f"{url}/{download_url(ok)}", timeout=30)
    assert response.status_code == 200 and response.content == CONTENT


def test_route_on_an_app_mounted_with_mount_gradio_app(db):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    ok = finished_export(db)
    with gr.Blocks() as demo:
        gr.Markdown("exports")
    parent = gr.mount_gradio_app(FastAPI(), demo, path="/studio", auth=("ada", "lovelace"))
    mount_downloads(parent, db)
    with TestClient(parent) as client:
        assert client.get(f"/studio/{download_url(ok)}").status_code == 401
        assert client.post("/studio/login", data={"username": "ada", "password": "lovelace"}).status_code == 200
        response = client.get(f"/studio/{download_url(ok)}")
        assert response.status_code == 200 and response.content == CONTENT


def test_mount_downloads_refuses_an_app_without_gradio(db):
    from fastapi import FastAPI

    with pytest.raises(TypeError, match="Gradio"):
        mount_downloads(FastAPI(), db)
