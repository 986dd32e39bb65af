"""Blind A/B judging in a real browser: five prompts judged with the keyboard (1/2/0), the
scoreboard, export to a preference dataset, and "train on my judgements" starting a DPO run."""
from __future__ import annotations

import re

import pytest

from tests.browser.browser import running_studio, screenshot, set_max_new_tokens
from tests.browser.test_studio_flow import open_tab, page  # noqa: F401  (the Chromium page fixture)

pytestmark = [pytest.mark.browser]
PROMPTS = ["Name a colour.", "Say hello.", "What is 2+2?", "Name an animal.", "Give me a word."]


@pytest.fixture
def studio_with_adapter(tmp_path, smollm2_path):
    """launch.py on a workspace that already holds one adapter (random LoRA weights) for SmolLM2."""
    import torch
    from peft import LoraConfig, get_peft_model

    from storage.db import Database
    from storage.settings import Settings
    from studio.models import SMOLLM2, load_model
    from tests.inference.helpers import add_adapter

    torch.manual_seed(0)
    peft = get_peft_model(load_model(smollm2_path, "text", dtype=torch.float32),
                          LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft.save_pretrained(tmp_path / "adapter")
    workspace = tmp_path / "workspace"
    db = Database(Settings.resolve(workspace))
    add_adapter(db, tmp_path / "adapter", SMOLLM2, "random-lora")
    db.dispose()
    with running_studio(workspace) as url:
        yield url


def test_judge_five_prompts_blind_then_train_on_the_judgements(studio_with_adapter, page):  # noqa: F811
    page.goto(studio_with_adapter)
    open_tab(page, "Chat")
    # short answers: ten of them are generated on a busy CPU
    set_max_new_tokens(page, 12)
    page.locator("#judge-box").get_by_text("Blind A/B judging").first.click()
    page.locator("#judge-prompts textarea").fill("\n".join(PROMPTS))
    page.locator("#judge-start").click()
    page.locator("#judge-status").get_by_text("Prompt 1 of 5").wait_for(timeout=240_000)
    assert page.locator("#judge-answer-a textarea").input_value() != ""
    for i, key in enumerate("12102"):
        page.locator("#judge-prompt").click()  # out of any text box: the keys are shortcuts there
        page.keyboard.press(key)
        page.locator("#judge-reveal").get_by_text(re.compile(rf"Prompt {i + 1}: you picked")).wait_for()
        reveal = page.locator("#judge-reveal").inner_text()
        assert "Base model" in reveal and "random-lora" in reveal  # identities shown after the pick
    page.locator("#judge-status").get_by_text("All 5 prompts judged.").wait_for()
    # the scoreboard lists the pair (Gradio's table keeps hidden copies of its cells: read the text)
    page.wait_for_function("() => document.querySelector('#judge-scoreboard')?.innerText.includes('random-lora (#1)')",
                           timeout=15_000)
    screenshot(page, "judge-scoreboard")
    page.locator("#judge-train").click()
    page.get_by_role("tab", name="Train", selected=True).wait_for()
    page.locator("#train-start").click()
    page.get_by_role("tab", name="Runs", selected=True).wait_for()
    # the run history lists the DPO run on the exported judgements
    page.wait_for_function("() => { const t = document.querySelector('#runs-table')?.innerText || '';"
                           " return t.includes('dpo lora on') && t.includes('my judgements'); }", timeout=60_000)
    screenshot(page, "judge-dpo-run")
