"""A method beyond LoRA, and a comparison of methods, in a real browser (Chromium via Playwright): pick VeRA
in the Train tab and read its card, train it briefly, chat with it; then "compare methods" with two
methods and read the Runs tab's compare view. Kept short for CI's 2 cores: the built-in SmolLM2, a few
steps, a short cut-off. Screenshots go to test-artifacts/screenshots/."""
from __future__ import annotations

import json
import re

import pytest

from tests.browser import test_studio_flow
from tests.browser.browser import ask_chat, running_studio, screenshot
from tests.browser.test_studio_flow import open_tab, pick, set_number

page = test_studio_flow.page  # the Chromium page fixture (a screenshot of the page when the test fails)

pytestmark = [pytest.mark.browser]
STEP_TIMEOUT_MS = 240_000
STEPS, CUTOFF = 3, 48


@pytest.fixture
def studio_url(tmp_path, smollm2_path, sample_data):
    """launch.py with its worker, on a workspace that already holds 16 Alpaca rows (importing is the
    studio flow test's subject, not this one's)."""
    from storage.db import Database
    from storage.settings import Settings
    from studio.datasets import ImportOptions, import_dataset

    workspace = tmp_path / "workspace"
    db = Database(Settings.resolve(workspace))
    src = db.workspace.uploads_dir / "alpaca_en_demo.json"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes((sample_data / "alpaca_en_demo.json").read_bytes())
    import_dataset(db, src, ImportOptions(limit=16, seed=1))
    db.dispose()
    with running_studio(workspace) as url:
        yield url


def vera_trainable(smollm2_path) -> str:
    """VeRA's trainable parameters on SmolLM2 as the card shows them (the estimator's count = peft's)."""
    from studio.method_guide import millions, numbers
    from studio.methods import METHODS
    from studio.spec import RunSpec

    spec = RunSpec(model="builtin:smollm2-135m-instruct", data={"dataset_id": 1}, method="vera",
                   train={"max_steps": STEPS, "batch_size": 1, "grad_accum": 1, "cutoff_len": CUTOFF})
    config = json.loads((smollm2_path / "config.json").read_text())
    return millions(numbers(spec, config, METHODS["vera"]).trainable)


def short_run_settings(page) -> None:
    page.locator("#train-advanced").get_by_text("Advanced settings").first.click()
    for field, value in (("train.max_steps", STEPS), ("train.batch_size", 1), ("train.grad_accum", 1),
                         ("train.cutoff_len", CUTOFF), ("train.logging_steps", 1)):
        set_number(page, field, value)
    page.locator("#train-advanced").get_by_text("Advanced settings").first.click()  # fold it away again


def chat_with_vera(page) -> None:
    page.locator("#run-chat").click()
    page.get_by_role("tab", name="Chat", selected=True).wait_for()
    page.locator("#chat-pane-1").wait_for(state="visible")
    assert "vera" in page.locator("#chat-pane-1").inner_text().lower()  # the pane's label names the adapter
    ask_chat(page, "What is the capital of France?", max_new_tokens=24, min_chars=3, timeout_ms=STEP_TIMEOUT_MS)


def test_vera_card_run_chat_then_compare_two_methods(studio_url, page, smollm2_path):
    page.goto(studio_url)

    # 1. Train tab: VeRA's card gives its trainable parameters on this model, as the table does.
    open_tab(page, "Train")
    pick(page, "train-dataset", "alpaca_en_demo")
    page.locator("#train-method").get_by_text("VeRA", exact=True).click()
    short_run_settings(page)
    expected = vera_trainable(smollm2_path)
    card = page.locator("#train-method-card")
    card.get_by_text(re.compile(r"Parameters trained on this model")).wait_for()
    # the settings just changed re-render the card: wait until Gradio's "processing" overlay has gone
    page.wait_for_function("() => document.querySelector('#train-method-card').innerText.trim().startsWith('VeRA')")
    text = card.inner_text().strip()
    assert text.startswith("VeRA") and f"{expected} (" in text and "LoRA r16:" in text, text
    assert "random" in text and "merges into the model's weights" in text
    page.locator("#train-memory").get_by_text("fits").wait_for()
    screenshot(page, "method-1-vera-card")

    # 2. A short VeRA run, followed in the Runs tab.
    page.locator("#train-start").click()
    page.get_by_role("tab", name="Runs", selected=True).wait_for()
    page.locator("#run-live").get_by_text("vera on smollm2-135m-instruct").wait_for()
    page.locator("#run-live .run-succeeded").wait_for(timeout=STEP_TIMEOUT_MS)

    # 3. Chat: the VeRA adapter answers beside the base model.
    chat_with_vera(page)
    screenshot(page, "method-2-vera-chat")

    # 4. Compare two methods: LoRA and IA3 (VeRA unticked), the same short run each.
    open_tab(page, "Train")
    page.locator("#train-compare").get_by_text("Compare methods by training").first.click()
    boxes = page.locator("#train-compare-methods")
    boxes.get_by_label("VeRA", exact=True).uncheck()
    assert boxes.get_by_label("LoRA", exact=True).is_checked() and boxes.get_by_label("IA3", exact=True).is_checked()
    page.locator("#train-compare-start").click()
    page.get_by_role("tab", name="Runs", selected=True).wait_for()
    message = page.locator("#train-compare-message").inner_text()
    assert re.search(r"Comparison cmp-\w+ queued: #2 LoRA, #3 IA3", message), message

    # 5. The compare view opens on the group: both runs' rows, finished, and a line for each.
    finished = """() => {
        const text = document.querySelector('#runs-compare-table')?.innerText || '';
        return (text.match(/succeeded/g) || []).length === 2 && !text.includes('est.');
    }"""
    page.wait_for_function(finished, timeout=STEP_TIMEOUT_MS)
    text = page.locator("#runs-compare-table").inner_text()
    assert re.search(r"#2\s+LoRA\s+succeeded", text) and re.search(r"#3\s+IA3\s+succeeded", text), text
    page.wait_for_timeout(4000)  # one more refresh so the plot has every point
    # Gradio draws the plot as SVG (Vega): one line path per series, stroked in its run's colour. The
    # runs' curves nearly coincide after three steps, so count the paths rather than look at pixels.
    for run, colour in (("LoRA", "#2563eb"), ("IA3", "#16a34a")):
        lines = page.locator(f'#runs-compare-plot g.mark-line path[stroke="{colour}"]')
        assert lines.count() >= 1, f"no line for {run}"
        assert re.match(r"M[\d.,-]+L[\d.,-]+L", lines.first.get_attribute("d") or ""), f"{run}'s line has no points"
    screenshot(page, "method-3-compare")
