"""Tokenising, loss masking and packing: packed losses equal unpacked ones."""

from __future__ import annotations

import pytest

from runners.learn.batches import (IGNORE, Tokenized, collate, collate_packed, forward_packed, pack,
                                   per_example_loss, per_example_loss_packed, tokenize)
from runners.data.feeds import Example


def test_prompt_tokens_carry_no_loss(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    [item] = tokenize(tok, [Example("Ticket: broken\nResolution:", " Reboot it.")], 64)
    n_prompt = 1 + len(tok("Ticket: broken\nResolution:", add_special_tokens=False)["input_ids"])
    assert item.input_ids[0] == tok.bos_token_id and item.input_ids[-1] == tok.eos_token_id
    assert item.labels[:n_prompt] == [IGNORE] * n_prompt and IGNORE not in item.labels[n_prompt:]


def test_pack_first_fit_keeps_every_token():
    items = [Tokenized(list(range(1, n + 1)), list(range(1, n + 1))) for n in (5, 3, 7, 2)]
    rows = pack(items, 8)  # lengths 5, 3, 7, 2: decreasing order 7, 5, 3, 2
    assert sum(len(r.input_ids) for r in rows) == 17 and all(len(r.input_ids) <= 8 for r in rows)
    assert len(rows) == 3  # first-fit-decreasing: [7], [5, 3], [2]
    assert rows[1].segments == [0] * 5 + [1] * 3
    assert rows[1].labels[0] == IGNORE and rows[1].labels[5] == IGNORE  # no loss across a boundary
    assert rows[1].position_ids == [0, 1, 2, 3, 4, 0, 1, 2]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_per_example_losses_equal_unpacked(attn):
    """No cross-contamination: each example's loss is the same packed or alone.
    Uses the pretrained tiny base, whose predictions depend on context, so a
    leak across examples would show (a random-init model would hide it)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.runners.conftest import EXAMPLES

    tok = AutoTokenizer.from_pretrained(EXAMPLES / "tiny-base")
    model = AutoModelForCausalLM.from_pretrained(EXAMPLES / "tiny-base", attn_implementation=attn).eval()
    examples = [Example("", "The old farmer walked to the river."), Example("Q: why\nA:", " Because."),
                Example("", "Snow fell quietly all night and the lake froze."), Example("", "Hi.")]
    items = tokenize(tok, examples, 64)
    with torch.no_grad():
        ids, mask, labels = collate(items, tok.pad_token_id, "cpu")
        alone = per_example_loss(model(input_ids=ids, attention_mask=mask).logits, labels)
        ids, pos, labels, seg = collate_packed(pack(items, 64), tok.pad_token_id, "cpu")
        assert ids.shape[0] == 1  # all four share one row
        packed = per_example_loss_packed(forward_packed(model, ids, pos), labels, seg, len(items))
    # the packed row masks each example's first label; recompute "alone" the same way
    for i, item in enumerate(items):
        masked = Tokenized(item.input_ids, [IGNORE] + item.labels[1:])
        ids, mask, labels = collate([masked], tok.pad_token_id, "cpu")
        with torch.no_grad():
            alone_i = per_example_loss(model(input_ids=ids, attention_mask=mask).logits, labels)[0]
        assert packed[i].item() == pytest.approx(alone_i.item(), rel=1e-4, abs=1e-5)
