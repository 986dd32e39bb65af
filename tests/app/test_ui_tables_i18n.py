"""Issue 21 / 15 leftovers, without a browser: every table's column names have a Chinese name and
follow the browser's language from the first paint; reward models (they score answers, they do not
write them) get no chat pane and no merged/GGUF export, only 'adapter only'."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pandas as pd
import pytest

from storage.models import Adapter, Run
from studio.models import SMOLLM2

ZH = SimpleNamespace(headers={"accept-language": "zh-CN,zh;q=0.9,en;q=0.8"})
EN = SimpleNamespace(headers={"accept-language": "en-US,en;q=0.9"})


def table_columns() -> dict[str, list[str]]:
    """The column names of every gr.Dataframe in the studio, by table."""
    from ui.tabs import datasets, export, judge, runs, runs_compare

    return {"datasets": datasets.TABLE_COLUMNS, "import problems": datasets.PROBLEM_COLUMNS,
            "exports": export.COLUMNS, "judging scoreboard": judge.SCORE_COLUMNS, "runs": runs.RUN_COLUMNS,
            "jobs": runs.JOB_COLUMNS, "batch compare": ["Prompt", "Base model"], "settings that differ": ["field", "Field"],
            "compare view": runs_compare.COLUMNS}


@pytest.mark.parametrize("table", list(table_columns()))
def test_every_table_header_has_a_chinese_name(table):
    from ui.i18n import localize

    columns = table_columns()[table]
    frame = pd.DataFrame(columns=columns)
    zh = list(localize(frame, ZH).columns)
    untranslated = [c for c, z in zip(columns, zh) if c == z and c not in ("SHA-256",)]
    assert not untranslated, f"{table}: no Chinese header for {untranslated}"
    assert list(localize(frame, EN).columns) == columns and list(localize(frame, None).columns) == columns


def test_statuses_in_a_table_follow_the_language_too():
    from ui.i18n import localize

    frame = pd.DataFrame([[1, "succeeded"], [2, "running"], [3, "something new"]], columns=["ID", "Status"])
    assert list(localize(frame, ZH)["状态"]) == ["成功", "运行中", "something new"]
    assert list(localize(frame, EN)["Status"]) == ["succeeded", "running", "something new"]
    assert list(frame["Status"]) == ["succeeded", "running", "something new"]  # the caller's frame is untouched


def test_a_table_value_function_follows_the_request():
    """Gradio builds the page without a request (English) and calls the value function with each
    page load's request: a zh-CN browser gets Chinese headers without waiting for a timer."""
    from ui.i18n import localized
    from ui.tabs.datasets import TABLE_COLUMNS

    value = localized(lambda: pd.DataFrame(columns=TABLE_COLUMNS))
    assert list(value().columns) == TABLE_COLUMNS
    assert "名称" in list(value(ZH).columns) and "Name" not in list(value(ZH).columns)


def test_chinese_list_values_for_generated_controls():
    """Literal fields (precision auto, gradient checkpointing on/off) and presets show translated labels."""
    from ui.i18n import ZH as ZH_STRINGS
    from ui.i18n import choices

    labels = {value: label for label, value in choices(["auto", True, False, "balanced", "frozen"])}
    assert {ZH_STRINGS[labels[v].key] for v in labels} == {"自动", "开启", "关闭", "均衡", "冻结"}


def _adapter(db, name: str, stage: str, task_type: str | None = None) -> int:
    with db.session() as s:
        run = Run(name=name, model_ref=SMOLLM2, method="lora", spec={"stage": {"name": stage}})
        s.add(run)
        s.flush()
        rel = f"runs/{run.id}/adapter"
        folder = db.workspace.root / rel
        folder.mkdir(parents=True)
        config = {"peft_type": "LORA", **({"task_type": task_type} if task_type else {})}
        (folder / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
        row = Adapter(run_id=run.id, name=name, method="lora", base_model_ref=SMOLLM2, path=rel)
        s.add(row)
        s.flush()
        return row.id


def test_a_reward_model_gets_no_chat_pane_and_only_an_adapter_export(db):
    from studio.export import service as exports
    from studio.export.errors import AdapterNotMergeableError
    from studio.inference import service as chat
    from studio.inference.errors import ChatError
    from studio.training import history
    from ui.tabs import chat as chat_tab
    from ui.tabs import export as export_tab
    from ui.tabs import train as train_tab

    sft = _adapter(db, "sft lora", "sft", "CAUSAL_LM")
    reward = _adapter(db, "reward lora", "reward", "SEQ_CLS")
    assert [v for _, v in chat_tab.adapter_choices(db, SMOLLM2)] == [sft]
    assert [v for _, v in train_tab.adapter_choices(db)] == ["", f"adapter:{sft}"]  # nothing for DPO/KTO to continue
    assert [v for _, v in export_tab.adapter_choices(db, "merged")] == [sft]
    assert [v for _, v in export_tab.adapter_choices(db, "gguf")] == [sft]
    offered = {v: label for label, v in export_tab.adapter_choices(db, "adapter")}
    assert set(offered) == {sft, reward} and "reward model" in offered[reward]
    # 'export this run' on the reward run preselects nothing for a merge, its adapter for 'adapter only'
    reward_run = next(a["run_id"] for a in history.adapters(db) if a["id"] == reward)
    assert export_tab.select_run(db, reward_run, "merged")["value"] is None
    assert export_tab.select_run(db, reward_run, "adapter")["value"] == reward
    # 'chat with this run' on the reward run opens the base alone
    assert chat_tab.select_run(db, reward_run)[1]["value"] == []
    # the services refuse them too (the CLI and the API do not go through the dropdowns)
    with pytest.raises(ChatError, match="reward model"):
        chat.create_chat(db, SMOLLM2, [reward])
    with pytest.raises(ChatError, match="reward model"):
        chat.create_compare(db, SMOLLM2, [sft, reward], ["Hi"])
    for kind in ("merged", "gguf"):
        with pytest.raises(AdapterNotMergeableError, match="reward model"):
            exports.start_export(db, reward, kind=kind)
    assert exports.start_export(db, reward, kind="adapter") > 0
    assert chat.create_chat(db, SMOLLM2, [sft]) > 0


def test_an_adapter_folder_with_a_score_head_is_not_merged_even_without_its_run(db):
    """An adapter imported from elsewhere (no run row says 'reward'): its PEFT task says so."""
    from studio.export import service as exports
    from studio.export.errors import AdapterNotMergeableError

    reward = _adapter(db, "imported reward", "sft", "SEQ_CLS")
    with pytest.raises(AdapterNotMergeableError, match="reward model"):
        exports.start_export(db, reward, kind="merged")
