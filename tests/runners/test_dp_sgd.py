"""DP-SGD engine: per-example clipping against a torch.func reference, the
sensitivity bound, the noise scale, Poisson sampling, and that weights move."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings, strategies as st

torch = pytest.importorskip("torch")

from runners.learn.batches import IGNORE, Tokenized, collate, per_example_loss  # noqa: E402
from runners.learn.dp_sgd import DPConfig, DPRandom, PerExampleClipper, lora_factors, micro_batches, poisson_sample  # noqa: E402
from runners.learn.train import DPRun, dp_step  # noqa: E402

VOCAB = 64


def _model(kind: str, seed: int = 0):
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    if kind == "llama":
        cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                          bos_token_id=1, eos_token_id=2)
        base, targets = LlamaForCausalLM(cfg), ["q_proj", "v_proj"]
    else:  # GPT-2's fused c_attn is a Conv1D, which peft wraps with fan_in_fan_out
        cfg = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=1,
                         eos_token_id=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        base, targets = GPT2LMHeadModel(cfg), ["c_attn"]
    # init_lora_weights=False: B is random too, so both factors have non-trivial gradients
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False))
    model.train()
    return model


def _examples(lengths, seed=1):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        ids = torch.randint(3, VOCAB, (n,), generator=g).tolist()
        out.append(Tokenized(ids, [IGNORE] + ids[1:]))
    return out


def _lora(model):
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _reference(model, items, C):
    """Clipped sum from per-example gradients by torch.func.vmap (no hooks involved)."""
    from torch.func import functional_call, grad, vmap

    ids, _, labels = collate(items, 0, "cpu")
    params = {n: p.detach() for n, p in _lora(model).items()}

    def loss_one(p, i, lab):
        # Right padding under a causal mask never reaches the real tokens, so no mask is needed here.
        logits = functional_call(model, p, args=(), kwargs={"input_ids": i[None]}).logits
        return per_example_loss(logits, lab[None])[0]

    per = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, ids, labels)
    norms = torch.sqrt(sum(g.pow(2).flatten(1).sum(1) for g in per.values()))
    factor = (C / (norms + 1e-6)).clamp(max=1.0)
    return {n: torch.einsum("b,b...->...", factor, g) for n, g in per.items()}, norms


def _clipped_sum(model, items, C, weights=None):
    clipper = PerExampleClipper(model, C)
    try:
        ids, mask, labels = collate(items, 0, "cpu")
        w = torch.ones(len(items)) if weights is None else weights
        (per_example_loss(model(input_ids=ids, attention_mask=mask).logits, labels) * w).sum().backward()
        norms = clipper.accumulate(w)
        clipper.finish(0.0, 1, None)
    finally:
        clipper.remove()
    grads = {n: p.grad.detach().clone() for n, p in _lora(model).items()}
    model.zero_grad(set_to_none=True)
    return grads, norms


@pytest.mark.parametrize("kind,factors", [("llama", 8), ("gpt2", 4)])  # A and B x modules x 2 layers
def test_clipped_sum_matches_vmap_reference(kind, factors):
    model = _model(kind)
    items = _examples([5, 11, 3, 16, 8, 2])
    _, norms = _reference(model, items, 1e9)
    C = float(norms.median())  # half the examples get clipped, half do not
    ref, _ = _reference(model, items, C)
    ours, our_norms = _clipped_sum(model, items, C)
    assert (norms > C).any() and (norms < C).any()
    assert torch.allclose(our_norms, norms, rtol=1e-5)
    assert set(ours) == set(ref) and len(ours) == factors
    for name in ref:
        rel = (ours[name] - ref[name]).norm() / ref[name].norm()
        assert rel < 1e-5, (name, float(rel))


def test_zero_weight_rows_contribute_nothing():
    model = _model("llama")
    items = _examples([6, 9, 4])
    with_pad, _ = _clipped_sum(model, items + _examples([12, 7], seed=9), 0.5, torch.tensor([1.0, 1, 1, 0, 0]))
    alone, _ = _clipped_sum(model, items, 0.5)
    for name in alone:
        assert torch.allclose(with_pad[name], alone[name], rtol=1e-5, atol=1e-8)


def test_one_outlier_moves_the_update_by_at_most_C_over_B():
    model = _model("llama")
    C, B = 0.05, 8
    items = _examples([6, 9, 4, 12, 7])
    # An outlier: a long sequence whose labels are all the rarest token, so its loss and gradient are huge.
    outlier = Tokenized(list(range(3, 35)), [IGNORE] + [VOCAB - 1] * 31)
    base, _ = _clipped_sum(model, items, C)
    more, norms = _clipped_sum(model, items + [outlier], C)
    assert float(norms[-1]) > 20 * C  # it really is an outlier before clipping
    shift = math.sqrt(sum(float((more[n] - base[n]).pow(2).sum()) for n in base)) / B
    assert shift <= C / B * (1 + 1e-5)
    assert shift >= C / B * (1 - 1e-3)  # clipped to exactly C, not dropped


def test_noise_std_is_sigma_C_over_B(monkeypatch):
    from scipy import stats

    monkeypatch.setenv("TGFLOW_DP_TEST_SEED", "7")
    model = _model("llama")
    sigma, C, B = 1.3, 0.7, 4
    run = DPRun(DPConfig(C, sigma, 0.0, B), DPRandom("cpu"))  # q = 0: every step is noise only
    clipper = PerExampleClipper(model, C)
    tok = type("Tok", (), {"pad_token_id": 0})()
    samples = []
    for _ in range(20):
        dp_step(model, tok, _examples([5, 6]), 2, "cpu", clipper, run)
        samples += [p.grad.flatten() for p in _lora(model).values()]
        model.zero_grad(set_to_none=True)
    clipper.remove()
    x = torch.cat(samples).double()
    expected = sigma * C / B
    n = x.numel()
    assert n > 15000
    # The sample variance times (n-1)/expected^2 is chi-square(n-1): accept within 4 standard errors.
    assert abs(float(x.std()) / expected - 1) < 4 / math.sqrt(2 * n)
    assert abs(float(x.mean())) < 4 * expected / math.sqrt(n)
    assert stats.kstest((x / expected).numpy(), "norm").pvalue > 1e-4


def test_poisson_sampling_rate_and_static_micro_batch_shapes(monkeypatch):
    monkeypatch.setenv("TGFLOW_DP_TEST_SEED", "3")
    rnd = DPRandom("cpu")
    sizes = [len(poisson_sample(200, 0.05, rnd.sampling)) for _ in range(400)]
    mean = sum(sizes) / len(sizes)
    assert abs(mean - 10.0) < 4 * math.sqrt(200 * 0.05 * 0.95 / 400)
    assert len(set(sizes)) > 5  # the batch size really varies
    chunks = list(micro_batches(list(range(11)), 4))
    assert [real for _, real in chunks] == [4, 4, 3]

    model = _model("llama")
    shapes = []
    model.register_forward_pre_hook(lambda m, args, kw: shapes.append(kw["input_ids"].shape[0]), with_kwargs=True)
    run = DPRun(DPConfig(1.0, 1.0, 0.5, 6), rnd)
    clipper = PerExampleClipper(model, 1.0)
    tok = type("Tok", (), {"pad_token_id": 0})()
    for _ in range(5):
        dp_step(model, tok, _examples([4] * 13), 4, "cpu", clipper, run)
    clipper.remove()
    assert shapes and set(shapes) == {4}


def test_a_dp_step_moves_every_lora_factor():
    from runners.learn.train import add_lora  # the production wrapper (B starts at zero, as in real runs)
    from runners.spec import LoraSpec
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))
    model = add_lora(base, LoraSpec(r=4, alpha=8), 0)
    model.train()
    before = {n: p.detach().clone() for n, p in _lora(model).items()}
    opt = torch.optim.AdamW(list(_lora(model).values()), lr=1e-2)
    run = DPRun(DPConfig(1.0, 0.8, 1.0, 4), DPRandom("cpu"))
    clipper = PerExampleClipper(model, 1.0)
    tok = type("Tok", (), {"pad_token_id": 0})()
    for _ in range(2):  # B starts at zero, so A only moves from the second step
        dp_step(model, tok, _examples([6, 7, 8, 9]), 4, "cpu", clipper, run)
        opt.step()
        opt.zero_grad(set_to_none=True)
    clipper.remove()
    for name, p in _lora(model).items():
        assert not torch.equal(p.detach(), before[name]), f"{name} did not move"


def test_production_randomness_is_not_reproducible(monkeypatch):
    monkeypatch.delenv("TGFLOW_DP_TEST_SEED", raising=False)
    a, b = DPRandom("cpu"), DPRandom("cpu")
    assert a.source == "os.urandom" and not a.test_mode
    assert not torch.equal(torch.rand(8, generator=a.noise), torch.rand(8, generator=b.noise))
    monkeypatch.setenv("TGFLOW_DP_TEST_SEED", "11")
    c, d = DPRandom("cpu"), DPRandom("cpu")
    assert c.test_mode and "NOT private" in c.source
    assert torch.equal(torch.rand(8, generator=c.noise), torch.rand(8, generator=d.noise))


def test_non_lora_trainable_parameters_are_refused():
    from tgsp.errors import InputError

    model = _model("llama")
    model.base_model.model.lm_head.weight.requires_grad_(True)
    with pytest.raises(InputError, match="LoRA factors only"):
        lora_factors(model)


@settings(max_examples=12, deadline=None)
@given(lengths=st.lists(st.integers(2, 20), min_size=1, max_size=6), c_scale=st.floats(0.05, 4.0),
       seed=st.integers(0, 2**16))
def test_clipped_sum_matches_reference_for_any_batch(lengths, c_scale, seed):
    """Any mix of lengths (so any padding) and any clipping norm, relative to the batch's median norm."""
    model = _MODEL.setdefault("llama", _model("llama"))
    items = _examples(lengths, seed=seed)
    _, norms = _reference(model, items, 1e9)
    C = float(norms.median()) * c_scale
    ref, _ = _reference(model, items, C)
    ours, _ = _clipped_sum(model, items, C)
    # Relative to the whole update: with a one-token context a factor's true gradient is exactly
    # zero (softmax over one key ignores the query), and both sides are then float noise.
    diff = math.sqrt(sum(float((ours[n] - ref[n]).pow(2).sum()) for n in ref))
    scale = math.sqrt(sum(float(ref[n].pow(2).sum()) for n in ref))
    assert diff <= 1e-5 * scale
    # the clipped sum never exceeds n*C in global norm
    total = math.sqrt(sum(float(g.pow(2).sum()) for g in ours.values()))
    assert total <= len(items) * C * (1 + 1e-5)


_MODEL: dict = {}


def test_a_factor_used_twice_and_one_never_used():
    """A LoRA'd layer applied twice in one forward (its per-example gradients add up), and
    a LoRA'd layer the forward never reaches (zero gradient), still match the reference."""
    from peft import LoraConfig, get_peft_model

    class Out:
        def __init__(self, logits):
            self.logits = logits

    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(VOCAB, 16)
            self.shared = torch.nn.Linear(16, 16)
            self.unused = torch.nn.Linear(16, 16)
            self.head = torch.nn.Linear(16, VOCAB)

        def forward(self, input_ids, attention_mask=None):
            h = self.embed(input_ids)
            h = torch.tanh(self.shared(h))
            h = torch.tanh(self.shared(h))  # the same module again
            return Out(self.head(h))

    torch.manual_seed(0)
    model = get_peft_model(Toy(), LoraConfig(r=2, lora_alpha=4, target_modules=["shared", "unused"],
                                             init_lora_weights=False))
    model.train()
    items = _examples([5, 8, 3, 6])
    _, norms = _reference(model, items, 1e9)
    C = float(norms.median())
    ref, _ = _reference(model, items, C)
    ours, our_norms = _clipped_sum(model, items, C)
    assert torch.allclose(our_norms, norms, rtol=1e-5)
    for name in ref:
        assert torch.allclose(ours[name], ref[name], rtol=1e-5, atol=1e-7), name
    assert all(float(ours[n].abs().max()) == 0.0 for n in ours if ".unused." in n)
