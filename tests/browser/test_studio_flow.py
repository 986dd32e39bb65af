"""The whole studio in a real browser (Debian's Chromium via Playwright), started by launch.py on a
fresh workspace and used by clicking and typing only: upload -> train -> watch -> chat -> export ->
download. Screenshots of every tab go to test-artifacts/screenshots/."""
from __future__ import annotations

import json
import re
import zipfile

import pytest

from tests.conftest import require
from tests.browser.browser import (CHROMIUM_ARGS, chromium_path, free_port, screenshot, start_studio,
                                   stop_studio)

pytestmark = [pytest.mark.browser]
STEP_TIMEOUT_MS = 240_000


@pytest.fixture
def studio_url(tmp_path, smollm2_path):
    """launch.py with its supervised worker; the built-in model comes from the session's cache."""
    workspace = tmp_path / "workspace"
    port = free_port()
    proc = start_studio(workspace, port)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        stop_studio(proc)


@pytest.fixture
def page(request):
    """A Chromium page; on failure its last state is saved as test-artifacts/screenshots/failed-*.png."""
    require(chromium_path() is not None, "Chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000}, accept_downloads=True)
        page.set_default_timeout(60_000)
        yield page
        if getattr(request.node, "rep_call", None) is None or request.node.rep_call.failed:
            screenshot(page, f"failed-{request.node.name}")
        browser.close()


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()
    page.wait_for_timeout(500)


def pick(page, elem_id: str, option: str) -> None:
    """Choose an option of a Gradio dropdown by (part of) its text."""
    page.locator(f"#{elem_id} input").first.click()
    page.get_by_role("option", name=re.compile(re.escape(option))).first.click()
    page.wait_for_timeout(300)


def set_number(page, spec_field: str, value) -> None:
    """Type into the number box of the Train tab's widget for a spec field (sliders included)."""
    box = page.locator(f"#spec-{spec_field.replace('.', '-')} input[type=number]").first
    box.fill(str(value))
    box.press("Tab")


def plot_has_colour(page, selector: str, rgb: tuple[int, int, int], min_pixels: int = 30) -> bool:
    """Whether the element's screenshot has at least ``min_pixels`` pixels of about this colour."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(page.locator(selector).screenshot())).convert("RGB")
    near = sum(1 for px in image.getdata() if all(abs(a - b) <= 24 for a, b in zip(px, rgb)))
    return near >= min_pixels


def test_upload_train_chat_export_download(studio_url, page, sample_data, tmp_path):
    page.goto(studio_url)

    # 1. Datasets: upload the Alpaca file and import it.
    page.locator("#dataset-upload input[type=file]").set_input_files(str(sample_data / "alpaca_en_demo.json"))
    page.wait_for_timeout(1000)
    page.locator("#dataset-import").click()
    page.get_by_text(re.compile(r"Imported #1 alpaca_en_demo")).wait_for()
    first = json.loads((sample_data / "alpaca_en_demo.json").read_text(encoding="utf-8"))[0]["instruction"]
    page.locator("#dataset-preview").get_by_text(first).first.wait_for()
    # the preview starts at the row's first line, in view (it used to scroll to the last message)
    assert page.locator("#dataset-preview").get_by_text(first).first.is_visible()
    # the token histogram is computed for the picked dataset without pressing a button
    page.locator("#dataset-stats").get_by_text(re.compile(r"rows\*\* exceed|Tokens per row")).first.wait_for(
        timeout=STEP_TIMEOUT_MS)
    screenshot(page, "1-datasets")

    # 2. Train: the imported dataset, a short LoRA run on the built-in model.
    open_tab(page, "Train")
    pick(page, "train-dataset", "alpaca_en_demo")
    page.locator("#train-advanced").get_by_text("Advanced settings").first.click()  # basic view first
    set_number(page, "train.max_steps", 6)
    set_number(page, "train.batch_size", 2)
    set_number(page, "train.grad_accum", 1)
    set_number(page, "train.cutoff_len", 128)
    set_number(page, "train.logging_steps", 1)
    page.locator("#train-memory").get_by_text("fits").wait_for()
    screenshot(page, "2-train")
    page.locator("#train-start").click()

    # 3. Runs: the start leads here. Meanwhile a second browser session, in Chinese, sees the same
    # run and its UI answers while the run trains.
    page.get_by_role("tab", name="Runs", selected=True).wait_for()
    second = page.context.browser.new_context(locale="zh-CN").new_page()
    second.goto(studio_url)
    second.get_by_role("tab", name="运行记录").click()
    second.locator("#run-live").get_by_text("lora on smollm2-135m-instruct").wait_for()
    # the run history's headers follow the browser's language too (no English header in zh-CN)
    second.wait_for_function("() => document.querySelector('#runs-table thead')?.innerText.includes('状态')",
                             timeout=15_000)
    headers = second.locator("#runs-table thead").inner_text()
    assert not any(word in headers for word in ("Status", "Name", "Model", "Loss", "Duration")), headers
    second.get_by_role("tab", name="数据集").click()
    second.locator("#datasets-table span", has_text="alpaca_en_demo").first.wait_for(timeout=10_000)
    screenshot(second, "3-second-session-zh")
    second.context.close()
    page.locator("#run-live .run-succeeded").wait_for(timeout=STEP_TIMEOUT_MS)  # the run trained meanwhile
    page.locator("#run-loss-plot canvas, #run-loss-plot svg").first.wait_for()
    page.wait_for_timeout(2500)  # one more refresh so the plot has every point
    # the loss curve is drawn (not only its axes): the smoothed line's colour is in the plot's pixels
    assert plot_has_colour(page, "#run-loss-plot", (0x25, 0x63, 0xEB)), "the loss plot shows no line"
    # the log panel ends with the log file's last line (not the start of a byte window)
    from storage.db import Database
    from storage.settings import Settings
    from studio.training.service import list_runs

    db = Database(Settings.resolve(tmp_path / "workspace"), migrate=False)
    log_file = db.workspace.job_log(list_runs(db)[0].job_id)
    db.dispose()
    last_line = log_file.read_text(encoding="utf-8").rstrip("\n").splitlines()[-1]
    shown = page.locator("#run-log textarea").input_value()
    assert shown.rstrip("\n").splitlines()[-1] == last_line
    screenshot(page, "3-runs")

    # 4. Chat: base vs adapter, side by side.
    page.locator("#run-chat").click()
    page.get_by_role("tab", name="Chat", selected=True).wait_for()
    page.locator("#chat-pane-1").wait_for(state="visible")
    page.locator("#chat-input textarea").fill("Give three tips for staying healthy.")
    page.locator("#chat-send").click()
    answered = """() => ['#chat-pane-0', '#chat-pane-1'].every(pane => {
        const bots = [...document.querySelectorAll(pane + ' .message.bot')];
        return bots.length > 0 && bots[bots.length - 1].innerText.trim().length > 10;
    }) && document.querySelector('#chat-status').innerText.trim() === ''"""
    page.wait_for_function(answered, timeout=STEP_TIMEOUT_MS)
    screenshot(page, "4-chat")

    # 5. Export the run's adapter as a merged model, then download it.
    open_tab(page, "Runs")
    page.locator("#run-export").click()
    page.get_by_role("tab", name="Export", selected=True).wait_for()
    page.locator("#export-start").click()
    link = page.locator("#export-details a.download-link")
    link.wait_for(timeout=STEP_TIMEOUT_MS)
    screenshot(page, "5-export")
    with page.expect_download(timeout=STEP_TIMEOUT_MS) as download:
        link.click()
    target = tmp_path / "merged.zip"
    download.value.save_as(target)
    with zipfile.ZipFile(target) as z:
        names = z.namelist()
    assert any(n.endswith(".safetensors") for n in names) and any(n.endswith("config.json") for n in names)
