"""The whole studio in a real browser (Debian's Chromium via Playwright), started by launch.py on a
fresh workspace and used by clicking and typing only: upload -> train -> watch -> chat -> export ->
download. Screenshots of every tab go to test-artifacts/screenshots/."""
from __future__ import annotations

import json
import re
import zipfile

import pytest

from tests.browser.browser import (
    CHROMIUM_ARGS,
    ask_chat,
    chromium_path,
    running_studio,
    screenshot,
)
from tests.conftest import require

pytestmark = [pytest.mark.browser]
STEP_TIMEOUT_MS = 240_000


@pytest.fixture
def studio_url(tmp_path, smollm2_path):
    """launch.py with its supervised worker; the built-in model comes from the session's cache."""
    workspace = tmp_path / "workspace"
    with running_studio(workspace) as url:
        yield url


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


# The run is cancelled once the page shows a step in 2-9: the steps after it leave room for the cancel to land
# before the run would end (~1 s a step on a quiet core; a poll and the cancel take ~2 s).
MAX_STEPS = 16
TABS = ["datasets", "train", "runs", "chat", "export"]
TAB_NAMES = {"en": ["Datasets", "Train", "Runs", "Chat", "Export"], "zh-CN": ["数据集", "训练", "运行记录", "对话", "导出"]}
RANK_METHODS = {"en": "Rank the methods", "zh-CN": "为方法排序"}
# Latin words a Chinese table header may keep: units, names of things, and "token" (as Chinese texts write it)
LATIN_ALLOWED = {"SHA-256", "UTC", "GPU", "CPU", "GiB", "MB", "GB", "CI", "token"}


def upload_with_duplicates(sample_data, tmp_path):
    """The Alpaca demo file with its first three rows appended again: (file, first row's instruction)."""
    rows = json.loads((sample_data / "alpaca_en_demo.json").read_text(encoding="utf-8"))
    folder = tmp_path / "upload"
    folder.mkdir()
    path = folder / "alpaca_en_demo.json"
    path.write_text(json.dumps(rows + rows[:3], ensure_ascii=False), encoding="utf-8")
    return path, rows[0]["instruction"]


def box(page, selector: str) -> dict:
    return page.locator(selector).first.bounding_box()


def test_upload_train_chat_export_download(studio_url, page, sample_data, tmp_path):
    page.goto(studio_url)
    upload, first = upload_with_duplicates(sample_data, tmp_path)

    # 1. Datasets: upload the Alpaca file (with three rows repeated) and import it.
    page.locator("#dataset-upload input[type=file]").set_input_files(str(upload))
    page.wait_for_timeout(1000)
    page.locator("#dataset-import").click()
    page.get_by_text(re.compile(r"Imported #1 alpaca_en_demo")).wait_for()
    # the import message says how many duplicate rows were removed
    message = page.locator("#dataset-import-message").inner_text()
    removed = re.search(r"(\d+) duplicates? removed", message)
    assert removed and int(removed.group(1)) >= 3, message
    preview = page.locator("#dataset-preview")
    line = preview.get_by_text(first).first
    line.wait_for()
    # the preview starts at the row's first line: inside the pane (it used to scroll to the last message)
    # and below the pane's label (not hidden under it)
    label, pane, shown = preview.locator("[data-testid=block-label]").first.bounding_box(), box(page, "#dataset-preview"), \
        line.bounding_box()
    assert shown["y"] >= label["y"] + label["height"] - 1, (shown, label)
    assert pane["y"] <= shown["y"] and shown["y"] + shown["height"] <= pane["y"] + pane["height"], (shown, pane)
    # the token histogram is computed for the picked dataset without pressing a button
    page.locator("#dataset-stats").get_by_text(re.compile(r"rows\*\* exceed|Tokens per row")).first.wait_for(
        timeout=STEP_TIMEOUT_MS)
    screenshot(page, "1-datasets")

    # 2. Train: the basic view first (model, data, method, preset, epochs, the memory verdict for the GPU
    # and for this CPU); the rest waits under "Advanced". A short LoRA run on the built-in model.
    open_tab(page, "Train")
    pick(page, "train-dataset", "alpaca_en_demo")
    for basic in ("#train-model", "#train-dataset", "#train-method", "#spec-method-preset", "#spec-train-epochs",
                  "#train-memory"):
        assert page.locator(basic).first.is_visible(), f"{basic} is not in the basic view"
    assert not page.locator("#spec-train-max_steps").is_visible(), "advanced settings are shown before asked for"
    page.locator("#train-memory").get_by_text("fits").wait_for()
    page.get_by_text(re.compile(r"^On a CPU")).first.wait_for()
    page.locator("#train-advanced").get_by_text("Advanced settings").first.click()
    page.locator("#spec-train-max_steps").wait_for()
    for field, value in (("train.max_steps", MAX_STEPS), ("train.batch_size", 2), ("train.grad_accum", 1),
                         ("train.cutoff_len", 128), ("train.logging_steps", 1), ("train.save_steps", 2)):
        set_number(page, field, value)
    page.locator("#train-memory").get_by_text("fits").wait_for()
    screenshot(page, "2-train")
    page.locator("#train-start").click()

    # 3. Runs: the start leads here. The run is interrupted (cancelled) after a few steps and resumed:
    # it goes on from its last checkpoint.
    page.get_by_role("tab", name="Runs", selected=True).wait_for()
    page.locator("#run-live").get_by_text(re.compile(rf"step [2-9]/{MAX_STEPS}\b")).first.wait_for(
        timeout=STEP_TIMEOUT_MS)
    page.get_by_role("button", name="Cancel run").click()
    page.locator("#run-live .run-cancelled").wait_for(timeout=STEP_TIMEOUT_MS)
    page.get_by_role("button", name="Resume").click()
    page.locator("#run-live .run-queued, #run-live .run-running").first.wait_for(timeout=30_000)
    # Meanwhile a second browser session, in Chinese, sees the same run and its UI answers while it trains.
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
    # the run row says it was interrupted and resumed, and at which step: "2: 0→4 cancelled, 4→12"
    page.wait_for_function(
        "([n]) => new RegExp('2: 0→(\\\\d+) cancelled, \\\\1→' + n).test(document.querySelector('#runs-table')?.innerText || '')",
        arg=[MAX_STEPS], timeout=15_000)
    assert page.locator("#run-live .run-attempts").count() == 1  # and the live view lists both attempts
    page.locator("#run-loss-plot canvas, #run-loss-plot svg").first.wait_for()
    page.wait_for_timeout(2500)  # one more refresh so the plot has every point
    # the loss curve is drawn right after the run finished, page still open (not only its axes): the
    # smoothed line's colour is in the plot's pixels
    assert plot_has_colour(page, "#run-loss-plot", (0x25, 0x63, 0xEB)), "the loss plot shows no line"
    # after the resume the log panel ends with the log file's last line (not an earlier attempt's)
    from storage.db import Database
    from storage.settings import Settings
    from studio.training.service import list_runs

    db = Database(Settings.resolve(tmp_path / "workspace"), migrate=False)
    log_file = db.workspace.job_log(list_runs(db)[0].job_id)
    db.dispose()
    last_line = log_file.read_text(encoding="utf-8").rstrip("\n").splitlines()[-1]
    shown_log = page.locator("#run-log textarea").input_value()
    assert shown_log.rstrip("\n").splitlines()[-1] == last_line
    # ... and that line is in view: the panel is not scrolled to the top of a longer text
    assert page.evaluate("() => { const t = document.querySelector('#run-log textarea');"
                         " return t.scrollHeight - t.scrollTop - t.clientHeight <= 2; }"), \
        "the log panel's last lines are out of view"
    screenshot(page, "3-runs")

    # 4. Chat: base vs adapter, side by side; the adapter's training summary above the panes, and the
    # words it changed against the base marked.
    page.locator("#run-chat").click()
    page.get_by_role("tab", name="Chat", selected=True).wait_for()
    page.locator("#chat-pane-1").wait_for(state="visible")
    summary = page.locator("#chat-summary")
    summary.get_by_text(re.compile(rf"{MAX_STEPS} steps, loss \d+\.\d+ → \d+\.\d+")).wait_for(timeout=15_000)
    assert box(page, "#chat-summary")["y"] + box(page, "#chat-summary")["height"] <= box(page, "#chat-pane-1")["y"]
    ask_chat(page, "Give three tips for staying healthy.", max_new_tokens=48, min_chars=10, timeout_ms=STEP_TIMEOUT_MS)
    differences = page.locator("#chat-differences")
    differences.get_by_text("similarity to the base").first.wait_for(timeout=15_000)
    similarity = float(re.search(r"similarity to the base (\d\.\d+)", differences.inner_text()).group(1))
    if similarity < 1.0:  # the answers differ: the adapter's own words are highlighted
        assert differences.locator("mark").count() > 0
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

    # 6. Every tab after this use, in English and in Chinese: screenshots of both, and in Chinese no
    # table header (datasets, runs, jobs, method comparison and advisor, scoreboard, exports) in English.
    english = walk_every_tab(page, "en")
    assert {"datasets", "train", "runs", "chat", "export"} <= {tab for tab, heads in english.items() if heads}, english
    zh = page.context.browser.new_context(locale="zh-CN", viewport={"width": 1440, "height": 1000}).new_page()
    zh.goto(studio_url)
    chinese = walk_every_tab(zh, "zh-CN")
    zh.context.close()
    for tab in TABS:
        assert len(chinese[tab]) >= len(english[tab]) > 0, (tab, chinese[tab], english[tab])
        latin = [h for h in chinese[tab] if english_words(h)]
        assert not latin, f"{tab}: table headers in English in a zh-CN browser: {latin}"


def english_words(header: str) -> list[str]:
    """The Latin words of a table header that are not units or names (SHA-256, UTC, GiB...)."""
    for allowed in sorted(LATIN_ALLOWED, key=len, reverse=True):
        header = header.replace(allowed, " ")
    return re.findall(r"[A-Za-z]{2,}", header)


def walk_every_tab(page, lang: str) -> dict[str, list[str]]:
    """Open each tab and every accordion in it, rank the methods in the Train tab's advisor, save a
    screenshot per tab (``tabs-<lang>-<n>-<tab>.png``) and return the visible table headers per tab."""
    headers = {}
    for i, (tab, name) in enumerate(zip(TABS, TAB_NAMES[lang]), 1):
        page.get_by_role("tab", name=name, exact=True).click()
        page.wait_for_timeout(800)
        for _ in range(2):  # accordions inside accordions (the scoreboard inside the judging box)
            closed = page.locator(".tabitem:visible button.label-wrap:not(.open)")
            for k in range(closed.count()):
                closed.nth(0).click()
                page.wait_for_timeout(150)
        if tab == "train":
            page.get_by_role("button", name=RANK_METHODS[lang], exact=True).click()
            page.locator("#train-advice table").wait_for(timeout=30_000)
            page.locator("#train-method-table table").wait_for(timeout=30_000)
        page.wait_for_timeout(1500)  # the tables' load and timer events
        headers[tab] = page.evaluate("""() => [...document.querySelectorAll('th')]
            .filter(th => th.offsetParent !== null).map(th => th.innerText.trim()).filter(Boolean)""")
        screenshot(page, f"tabs-{lang}-{i}-{tab}")
    return headers
