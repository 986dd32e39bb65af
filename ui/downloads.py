"""Serving export archives to the browser: streamed from disk, addressed by export id, behind login.

How the app serves downloads (call once, after ``demo.launch(..., prevent_thread_lock=True)``)::

    from ui.downloads import mount_downloads
    demo.launch(server_name=..., auth=..., prevent_thread_lock=True, **launch_kwargs())
    mount_downloads(demo.app, db)          # GET /download/export/{export_id}

``demo.app`` is Gradio's own FastAPI app (``gradio.routes.App``). Adding the route to it, rather
than to a parent app, matters for the login: Gradio 6.31 sets its login cookie
(``access-token[-unsecure]-<cookie_id>``) without a path, so the browser only sends it to URLs
under the Gradio app's mount point. The route honours Gradio's login exactly as Gradio's own
``/gradio_api/login_check`` does: ``auth`` (user/password, cookie token looked up in
``app.tokens``) or ``auth_dependency`` (a function of the request returning a user or None); with
neither configured the route is open, like the rest of the app. If the studio is served with
``gr.mount_gradio_app(parent, demo, path="/studio", auth=...)`` instead, pass the parent and let
the function find the mounted Gradio app: ``mount_downloads(parent, db)`` adds the route to the
Gradio sub-app, i.e. at ``/studio/download/export/{export_id}``.

The UI links to ``download_url(export_id)`` (relative, so it works under any mount path).
Files are sent by Starlette's ``FileResponse``: 64 KiB chunks, HTTP Range supported (resumable),
never the whole file in memory, and not recompressed (Gradio's Brotli middleware skips paths
without a text file extension).
"""
from __future__ import annotations

import inspect
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from storage.db import Database
from studio.export import service
from studio.export.errors import ExportNotFoundError, ExportNotReadyError, ExportPathRefusedError

ROUTE = "/download/export/{export_id}"


def download_url(export_id: int) -> str:
    """The link the UI shows for a finished, verified export (relative to the page)."""
    return f"download/export/{int(export_id)}"


def mount_downloads(app: FastAPI, db: Database) -> FastAPI:
    """Add ``GET/HEAD /download/export/{export_id}`` to the Gradio app (``demo.app``, or the Gradio
    app mounted inside ``app``). Returns the app the route was added to."""
    gradio_app = find_gradio_app(app)

    async def download_export(export_id: int, request: Request) -> FileResponse:
        await require_login(gradio_app, request)
        path = await run_in_threadpool(_resolve, db, export_id)  # database and disk: off the event loop
        return FileResponse(path, filename=path.name, media_type="application/zip")

    gradio_app.add_api_route(ROUTE, download_export, methods=["GET", "HEAD"], include_in_schema=False)
    _move_route_before_catch_alls(gradio_app)
    return gradio_app


def find_gradio_app(app: FastAPI) -> FastAPI:
    """``app`` itself when it is Gradio's app, else the Gradio app mounted in it. The login check
    needs Gradio's app (its tokens and auth settings), so anything else is refused."""
    from gradio.routes import App

    if isinstance(app, App):
        return app
    for route in getattr(app, "routes", []):
        if isinstance(getattr(route, "app", None), App):
            return route.app
    raise TypeError("mount_downloads needs Gradio's app: pass demo.app after demo.launch(), or the FastAPI app "
                    "that gr.mount_gradio_app(...) mounted the studio on")


async def current_user(gradio_app: Any, request: Request) -> str | None:
    """The logged-in user, found the way Gradio 6.31's own ``get_current_user`` finds it."""
    dependency = getattr(gradio_app, "auth_dependency", None)
    if dependency is not None:
        user = dependency(request)
        return await user if inspect.isawaitable(user) else user
    cookie_id = gradio_app.cookie_id
    token = (request.cookies.get(f"access-token-{cookie_id}")
             or request.cookies.get(f"access-token-unsecure-{cookie_id}"))
    return gradio_app.tokens.get(token) if token else None


async def require_login(gradio_app: Any, request: Request) -> None:
    login_required = (getattr(gradio_app, "auth", None) is not None
                      or getattr(gradio_app, "auth_dependency", None) is not None)
    if login_required and await current_user(gradio_app, request) is None:
        raise HTTPException(status_code=401, detail="log in to Finetune Studio to download exports")


def _resolve(db: Database, export_id: int):
    """Map the export service's refusals to HTTP: 404 unknown, 409 not ready, 403 tampered."""
    try:
        return service.download_path(db, export_id)
    except ExportNotFoundError as e:
        raise HTTPException(status_code=404, detail=str(e)) from None
    except ExportNotReadyError as e:
        raise HTTPException(status_code=409, detail=str(e)) from None
    except ExportPathRefusedError as e:
        raise HTTPException(status_code=403, detail=str(e)) from None


def _move_route_before_catch_alls(app: FastAPI) -> None:
    # Routes are matched in order; put ours first so no earlier pattern of Gradio's can shadow it.
    routes = app.router.routes
    ours = [r for r in routes if getattr(r, "path", None) == ROUTE]
    app.router.routes[:] = ours + [r for r in routes if r not in ours]


def download_button_value(db: Database, export_id: int) -> str:
    """The verified archive's path, for ``gr.DownloadButton(value=...)`` (same checks as the route).

    What Gradio 6.31 does with it (``processing_utils.save_file_to_cache``): it never reads the
    file into memory, but it hashes it in 8 KiB blocks and copies it into its cache folder
    (``shutil.copy2``): a second copy on disk and a full read before the button appears. It also
    refuses files outside ``allowed_paths`` / cwd / temp, so launch with
    ``allowed_paths=[str(db.workspace.exports_dir)]``. For large merged models prefer a plain link
    to ``download_url(export_id)``: served straight from the export folder, no copy.
    """
    return str(service.download_path(db, export_id))
