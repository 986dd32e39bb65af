"""Every method of the table, end to end on the real SmolLM2-135M-Instruct: trains a few steps
(loss falls), saves, chats through the studio's chat engine with the adapter on (answers differ
from the base pane), and exports as its row says: merged (the export verifies merged output ==
adapter-on-base) or adapter-only (the exported folder loads with PeftModel.from_pretrained)."""
from __future__ import annotations

from statistics import mean

import pytest

from jobs.worker import run_inline
from storage.models import JobStatus
from studio.methods import METHODS
from studio.training.service import get_run, run_adapters, run_metrics, start_run
from tests.training.helpers import text_spec

pytestmark = pytest.mark.slow

# Tiny and fast: 4 rows, 64 tokens, 8 steps. Learning rates per method kind: the 4 rows are fitted
# in 8 steps at these (each method's own default is for real runs of hundreds of steps).
FAST = dict(max_steps=8, cutoff_len=64, logging_steps=1, save_steps=100)
ATTENTION = {"targets": {"mode": "attention"}}  # methods that rebuild a full-size update per layer: fewer layers
TEST_LR = {"adalora": 5e-3, "loha": 1e-2, "lokr": 5e-3, "full": 1e-4, "freeze": 1e-4, "longlora": 1e-3, "prompt_tuning": 1e-2, "prefix_tuning": 1e-2,
           "p_tuning": 3e-3, "vera": 1e-2, "ia3": 1e-2, "bitfit": 1e-2, "oft": 1e-3}
# Methods whose start is a random function of the base (prompt/prefix tokens, P-tuning's encoder)
# change the output before training; the loss check is what shows they learned.
SETTINGS = {"adalora": {"tinit": 1, "tfinal": 2}, "oft": ATTENTION, "lokr": ATTENTION, "loha": ATTENTION,
            "vera": {**ATTENTION, "r": 64}, "prompt_tuning": {"num_virtual_tokens": 8},
            "prefix_tuning": {"num_virtual_tokens": 8}, "p_tuning": {"num_virtual_tokens": 8}}
PROMPT = [{"role": "user", "content": "Give three tips for staying healthy."}]


@pytest.fixture(scope="module")
def engine(model_cache):
    from studio.inference.engine import ChatEngine

    e = ChatEngine(device="cpu", dtype="float32", model_cache=model_cache)
    yield e
    e.unload()


def train(db, dataset_id: int, model: str, method: str):
    spec = text_spec(model, dataset_id, {"name": method, **SETTINGS.get(method, {})},
                     learning_rate=TEST_LR.get(method, 1e-3), precision="fp32", **FAST)
    run_id = start_run(db, spec)
    outcome = run_inline(db, get_run(db, run_id).job_id)
    assert outcome.status == JobStatus.SUCCEEDED, outcome.error
    return get_run(db, run_id), outcome.result


def logit_change(engine, adapter) -> float:
    """Largest change of the chat model's next-token logits with the adapter on (small-effect methods
    such as VeRA may keep the same 8 greedy tokens after 8 steps)."""
    import torch

    base = engine._require_base()
    ids = base.tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt",
                                             return_dict=True)["input_ids"]
    with torch.no_grad(), engine._activated(adapter) as model:
        on = model(input_ids=ids).logits[0, -1]
    with torch.no_grad(), engine._activated(None) as model:
        off = model(input_ids=ids).logits[0, -1]
    return float((on - off).abs().max())


def chat(engine, adapter=None) -> str:
    from studio.inference.settings import ChatSettings

    return engine.generate(PROMPT, ChatSettings.for_compare(max_new_tokens=8), adapter=adapter).text


@pytest.mark.parametrize("name", [n for n in METHODS if n != "qlora"] + ["qlora"])
def test_every_method_trains_chats_and_exports(db, alpaca_id, smollm2, smollm2_path, engine, name, tmp_path):
    from studio.export import service as export_service
    from studio.inference.adapters import resolve
    from tests.export.helpers import run_export

    method = METHODS[name]
    run, result = train(db, alpaca_id, smollm2, name)
    losses = [m.loss for m in run_metrics(db, run.id, "train") if m.loss is not None]
    # the same two batches at the start and at the end (4 rows, batch 2): a deterministic comparison
    assert mean(losses[-2:]) < 0.97 * mean(losses[:2]), losses
    assert result["model"]["trainable_parameters"] > 0

    # chat: the studio's engine, one base model for all methods, the adapter switched on and off
    adapter_row = run_adapters(db, run.id)[0]
    engine.ensure_base(smollm2)
    adapter = resolve(db, adapter_row.id)
    assert chat(engine, adapter) != chat(engine) or logit_change(engine, adapter) > 1e-3, \
        f"{name}: the adapter does not change the chat's output"

    if method.merges:  # the export's own merge, in memory (tests/export covers writing the merged folder)
        assert_merge_equals_adapter_on_base(smollm2_path, db.workspace.root / adapter_row.path)
    else:
        with pytest.raises(Exception, match="adapter only"):
            export_service.start_export(db, adapter_row.id, kind="merged")
        export_id = run_export(db, adapter_row.id, kind="adapter")
        info = export_service.get_export(db, export_id)
        assert info.status == JobStatus.SUCCEEDED and info.verified, info.error
        assert_loads_with_peft(export_service.export_folder(db, export_id), smollm2_path)


def assert_merge_equals_adapter_on_base(base_path, adapter_path):
    import torch

    from studio.export.merge import load_adapter_on_base, merge

    model = load_adapter_on_base(base_path, adapter_path, "text", "float32", "cpu")
    ids = torch.tensor([[1, 504, 3458, 314, 253, 4600, 30]])
    with torch.no_grad():
        on = model(input_ids=ids).logits
        with model.disable_adapter():
            off = model(input_ids=ids).logits
        merged = merge(model)(input_ids=ids).logits
    effect, diff = float((on - off).abs().max()), float((merged - on).abs().max())
    assert effect > 1e-3 and diff < max(1e-4, effect / 100), (effect, diff)


def assert_loads_with_peft(folder, base_path):
    import torch
    from peft import PeftModel

    from studio.models import load_model

    base = load_model(base_path, "text", dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(folder)).eval()
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        on = model(input_ids=ids).logits[0, -1]
        with model.disable_adapter():
            off = model(input_ids=ids).logits[0, -1]
    assert float((on - off).abs().max()) > 1e-4


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_pissa_and_olora_adapters_are_converted_to_work_on_the_original_base(db, alpaca_id, smollm2, smollm2_path,
                                                                             init):
    """PiSSA/OLoRA move part of each weight into the adapter while training; the saved adapter is
    converted (peft, rank 2r) so that it applies to the unmodified base: merged == adapter-on-base."""
    import json

    spec = text_spec(smollm2, alpaca_id, {"name": "lora", "r": 4, "alpha": 4, "init": init,
                                          "targets": {"mode": "attention"}}, precision="fp32", **FAST)
    run_id = start_run(db, spec)
    outcome = run_inline(db, get_run(db, run_id).job_id)
    assert outcome.status == JobStatus.SUCCEEDED, outcome.error
    folder = db.workspace.run_dir(run_id) / "adapter"
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["init_lora_weights"] is True  # a plain LoRA of rank 2r
    assert_merge_equals_adapter_on_base(smollm2_path, folder)
