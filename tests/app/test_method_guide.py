"""The Train tab's method cards and comparison table: every method explained in English and Chinese,
with its trainable parameters on the chosen model computed from config.json by the estimator."""
from __future__ import annotations

import json

import pytest

from studio import estimate as est
from studio.method_guide import REFERENCE, card_markdown, comparison_rows, default_spec, millions, numbers
from studio.methods import METHODS
from studio.methods.texts_zh import EXPLAIN_ZH, LABELS_ZH
from ui.tabs import train


@pytest.fixture
def smollm2_config(smollm2_path) -> dict:
    return json.loads((smollm2_path / "config.json").read_text())


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_is_explained_in_both_languages(name):
    zh = EXPLAIN_ZH[name]
    for text in (zh.summary, zh.memory, zh.speed, zh.when):
        assert len(text) > 10 and any("\u4e00" <= c <= "\u9fff" for c in text)
    assert name in LABELS_ZH


def test_vera_card_counts_its_parameters_and_lora_s_on_the_model(smollm2_config):
    spec = default_spec("builtin:smollm2-135m-instruct")
    vera, lora = numbers(spec, smollm2_config, METHODS["vera"]), numbers(spec, smollm2_config, METHODS[REFERENCE])
    assert vera.trainable and lora.trainable and 10 * vera.trainable < lora.trainable
    card = card_markdown("vera", smollm2_config, "en", spec)
    assert f"{millions(vera.trainable)} (" in card and f"LoRA r16: {millions(lora.trainable)}" in card
    assert "merges into the model's weights" in card
    zh = card_markdown("vera", smollm2_config, "zh", spec)
    assert "训练什么" in zh and millions(vera.trainable) in zh


def test_prompt_methods_say_they_do_not_merge_and_are_text_only(smollm2_config):
    card = card_markdown("prompt_tuning", smollm2_config, "en", default_spec("builtin:smollm2-135m-instruct"))
    assert "not merged" in card and "Text models only" in card


def test_comparison_has_one_row_per_method_with_the_estimators_numbers(smollm2_config):
    spec = default_spec("builtin:smollm2-135m-instruct")
    rows = comparison_rows(spec, smollm2_config)
    assert [r[0] for r in rows] == [m.label for m in METHODS.values()]
    full = rows[list(METHODS).index("full")]
    request = est.EstimateRequest(config=smollm2_config, method="blocks", train_blocks=-1, train_final_norm=True,
                                  train_embeddings=True)
    assert full[2] == millions(est.estimate(request).params["trainable"])
    assert {r[5] for r in rows} == {"yes", "no"}
    assert comparison_rows(spec, smollm2_config, "zh")[0][5] == "是"


def test_train_tab_card_and_table_for_the_form_s_model(smollm2_path):
    spec, problems = train.spec_from_form({"model": "builtin:smollm2-135m-instruct", "data.dataset_id": 1,
                                            "method.name": "ia3"})
    assert problems == []
    card = train.explain_markdown("ia3", spec, "zh")
    assert "IA3" in card and "在此模型上训练的参数" in card
    table = train.methods_table(spec, "en")
    assert table.count("\n") == len(METHODS) + 1 and "| VeRA |" in table


def test_advisor_ranks_methods_that_fit_with_reasons():
    from studio.method_advisor import advise
    from studio.method_guide import default_spec

    config, spec = est.lookup_config("qwen2.5-7b"), default_spec("Qwen/Qwen2.5-7B-Instruct")
    card = est.find_card("4090").capacity_bytes
    small = advise(spec, config, card, rows=500)
    assert small[0].key == "lora:light" and "500 rows" in small[0].reasons[0]
    assert all(a.fits != "does not fit" for a in small) and "full" not in {a.method for a in small}
    t4 = advise(spec, config, est.find_card("T4").capacity_bytes, rows=5_000)
    assert t4[0].method == "qlora" and "fits only in 4-bit -> QLoRA" in t4[0].reasons
    big = advise(spec, config, est.find_card("H200").capacity_bytes, rows=50_000)
    assert big[0].method == "full"
    vl = advise(spec, est.lookup_config("Qwen/Qwen2.5-VL-7B-Instruct"), card, rows=5_000, vision=True)
    assert not {a.method for a in vl} & {"prompt_tuning", "prefix_tuning", "p_tuning"}


def test_train_tab_advisor_table_and_choices(db):
    from storage.models import Dataset

    with db.session() as s:
        s.add(Dataset(id=1, name="five thousand rows", num_rows=5_000, num_train=5_000))
    spec, _ = train.spec_from_form({"model": "Qwen/Qwen2.5-7B-Instruct", "data.dataset_id": 1, "method.name": "lora"})
    table, picks = train.advise_view(db, spec, "T4 16 GB", "gpu_card", "zh")
    assert "5000 rows" in table
    assert table.startswith("| # | 方法") and picks[0][1] == "qlora:balanced"
