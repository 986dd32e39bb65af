"""Padding-free batches: rows joined end to end with restarting position ids, through the collator
the recipe uses (TRL's, ``padding_free=True``), on a tiny Llama built from a config, with both
attentions the recipe may use on CPU: transformers' SDPA (block-diagonal mask from the positions)
and the studio's ``sdpa_rows`` (SDPA per row, from the collator's ``cu_seq_lens_q``).

The per-token loss equals the padded batch's, and no token attends across a row boundary: changing
row 1 leaves row 2's logits exactly as they were (and the same check does see a change when the
rows are one sequence, so it would catch attention across rows)."""
from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from studio.training import attention
from studio.training.trainer import labelled_logits_loss

PAD = 0
ROWS = [  # (input_ids, labels): -100 on the "prompt" tokens, as the recipe's assistant-only labels
    ([5, 17, 23, 9, 41, 8, 3], [-100, -100, -100, 9, 41, 8, 3]),
    ([11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22], [-100] * 5 + [16, 17, 18, 19, 20, 21, 22]),
    ([30, 31, 32, 33], [-100, -100, 32, 33]),
]


@pytest.fixture(scope="module", params=["sdpa", attention.NAME])
def tiny_llama(request):
    return build_tiny_llama(request.param)


def build_tiny_llama(implementation: str):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         pad_token_id=PAD)
    # As in training (the recipe and the trainer's loss turn the KV cache off): with a cache,
    # transformers does not look for restarting positions and one causal mask spans the rows.
    config.use_cache = False
    model = LlamaForCausalLM(config).eval()
    if implementation == attention.NAME:
        attention.register()
    model.set_attn_implementation(implementation)
    assert model.config._attn_implementation == implementation
    return model


def model_inputs(batch) -> dict:
    """What the Trainer passes to the model: the whole batch but the labels."""
    return {k: v for k, v in batch.items() if k != "labels"}


def as_one_sequence(batch) -> dict:
    """The same joined row, but as one sequence: positions 0..N-1, one span."""
    n = batch["input_ids"].shape[1]
    out = dict(batch, position_ids=torch.arange(n)[None], cu_seq_lens_q=torch.tensor([0, n], dtype=torch.int32))
    out["cu_seq_lens_k"], out["max_length_q"], out["max_length_k"] = out["cu_seq_lens_q"], n, n
    return out


def flat_batch(rows=ROWS):
    collator = DataCollatorForLanguageModeling(pad_token_id=PAD, padding_free=True)
    return collator([{"input_ids": ids, "labels": labels} for ids, labels in rows])


def padded_batch(rows=ROWS):
    collator = DataCollatorForLanguageModeling(pad_token_id=PAD)
    return collator([{"input_ids": ids, "labels": labels} for ids, labels in rows])


def token_losses_padded(model, batch) -> list[torch.Tensor]:
    """Per-token cross-entropy of each row's labelled next tokens, from a padded batch."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    out = []
    for r, (ids, labels) in enumerate(ROWS):
        target = torch.tensor(labels[1:])
        keep = target != -100
        ce = torch.nn.functional.cross_entropy(logits[r, : len(ids) - 1][keep], target[keep], reduction="none")
        out.append(ce)
    return out


def row_logits_flat(model, batch, row: int, rows=ROWS) -> torch.Tensor:
    start = sum(len(ids) for ids, _ in rows[:row])
    with torch.no_grad():
        logits = model(**model_inputs(batch)).logits
    return logits[0, start:start + len(rows[row][0])]


def test_collator_joins_rows_with_restarting_positions():
    batch = flat_batch()
    assert batch["input_ids"].shape == (1, sum(len(ids) for ids, _ in ROWS))  # no padding at all
    assert "attention_mask" not in batch  # else transformers would not build the per-row mask
    assert batch["position_ids"][0].tolist() == [p for ids, _ in ROWS for p in range(len(ids))]


def test_per_token_loss_equals_the_padded_batch(tiny_llama):
    batch = flat_batch()
    with torch.no_grad():
        logits = tiny_llama(**model_inputs(batch)).logits[0]
    labels = batch["labels"][0]
    flat = torch.nn.functional.cross_entropy(logits[:-1], labels[1:], reduction="none", ignore_index=-100)
    flat = flat[labels[1:] != -100]
    padded = torch.cat(token_losses_padded(tiny_llama, padded_batch()))
    assert flat.shape == padded.shape
    torch.testing.assert_close(flat, padded, rtol=1e-5, atol=1e-5)


def test_trainer_loss_of_flat_batch_equals_models_own_loss_on_padded(tiny_llama):
    """studio.training.trainer's loss (logits only at labelled positions) on the padding-free batch
    is the model's own causal-LM loss on the padded batch."""
    flat, padded = flat_batch(), padded_batch()
    with torch.no_grad():
        ours, _ = labelled_logits_loss(tiny_llama, flat)
        reference = tiny_llama(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"],
                               labels=padded["labels"]).loss
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)


def test_gradients_equal_the_padded_batch(tiny_llama):
    model = tiny_llama
    flat, padded = flat_batch(), padded_batch()
    loss, _ = labelled_logits_loss(model, flat)
    grads_flat = torch.autograd.grad(loss, [p for p in model.parameters()], allow_unused=True)
    reference = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"], labels=padded["labels"]).loss
    grads_padded = torch.autograd.grad(reference, [p for p in model.parameters()], allow_unused=True)
    for a, b in zip(grads_flat, grads_padded):
        if a is not None or b is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_no_attention_across_rows(tiny_llama):
    changed = [list(ROWS[0]), *ROWS[1:]]
    changed[0] = ([t + 1 for t in ROWS[0][0]], ROWS[0][1])  # every token of row 1 replaced
    before = row_logits_flat(tiny_llama, flat_batch(), row=1)
    after = row_logits_flat(tiny_llama, flat_batch(changed), row=1, rows=changed)
    torch.testing.assert_close(after, before, rtol=0, atol=1e-6)
    # The check sees leaks: as one long causal sequence, row 2 does change.
    leaky_before, leaky_after = as_one_sequence(flat_batch()), as_one_sequence(flat_batch(changed))
    assert not torch.allclose(row_logits_flat(tiny_llama, leaky_before, 1), row_logits_flat(tiny_llama, leaky_after, 1,
                                                                                              rows=changed))


def test_sdpa_rows_keeps_rows_apart_by_the_collators_bounds():
    """sdpa_rows really splits at cu_seq_lens_q: told the joined row is one span (positions still
    restarting), row 2 does see row 1. (Plain SDPA ignores the bounds and goes by the positions.)"""
    tiny_llama = build_tiny_llama(attention.NAME)
    changed = [([t + 1 for t in ROWS[0][0]], ROWS[0][1]), *ROWS[1:]]
    one_span = lambda b: dict(b, cu_seq_lens_q=torch.tensor([0, b["input_ids"].shape[1]], dtype=torch.int32),  # noqa: E731
                              cu_seq_lens_k=torch.tensor([0, b["input_ids"].shape[1]], dtype=torch.int32))
    assert not torch.allclose(row_logits_flat(tiny_llama, one_span(flat_batch()), 1),
                              row_logits_flat(tiny_llama, one_span(flat_batch(changed)), 1, rows=changed))


def test_prompt_learning_models_take_trls_loss():
    """Prompt tuning lengthens the sequence by its virtual tokens; the labelled-positions loss would
    misalign, so the trainer leaves those models to TRL (which pads the labels)."""
    from peft import LoraConfig, PromptTuningConfig, get_peft_model

    from studio.training.trainer import is_prompt_learning

    assert is_prompt_learning(get_peft_model(build_tiny_llama("sdpa"), PromptTuningConfig(task_type="CAUSAL_LM",
                                                                                          num_virtual_tokens=4)))
    assert not is_prompt_learning(get_peft_model(build_tiny_llama("sdpa"), LoraConfig(target_modules=["q_proj"])))
