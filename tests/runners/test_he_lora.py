"""HE-LoRA (experimental): the two planes on real CKKS ciphertexts (runners/n2he/lora.py),
and the delta hooked into a real peft model (runners/learn/he_lora.py)."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal as ts

from runners.n2he.ckks import MAX_LOG_Q_128
from runners.n2he.lora import GAIN_MAX, PARAMS, X_MAX, Adapter, AdapterPlane, KeyHolder
from tgsp.errors import InputError


@pytest.fixture(scope="module")
def holder():
    return KeyHolder()


def test_the_parameters_are_128_bit_and_the_plane_gets_no_key(holder):
    PARAMS.check()
    assert PARAMS.log_q <= MAX_LOG_Q_128[PARAMS.poly_modulus_degree]
    ctx = ts.context_from(holder.plane_context())
    assert not ctx.is_private() and not ctx.has_galois_keys() and not ctx.has_relin_keys()
    with pytest.raises(ValueError):  # the plane cannot decrypt what it computes
        ts.ckks_vector_from(ctx, holder.encrypt(np.ones((3, 1)))[0][0]).decrypt()


def test_the_delta_equals_the_plaintext_delta_across_chunks(holder):
    rng = np.random.default_rng(1)
    tokens, d, r, outs = PARAMS.slots + 5, 4, 2, 3  # two chunks of slots
    x = rng.normal(size=(tokens, d))
    ad = Adapter(a=rng.normal(size=(r, d)) * 0.3, sb=rng.normal(size=(outs, r)) * 0.3)
    ad.sb[1] = 0.0  # a zero row is answered with "exactly zero", not a ciphertext
    plane = AdapterPlane(holder.plane_context(), {"m": ad})
    plane.receive(holder.encrypt(x))
    answer = plane.delta("m")
    assert len(answer) == 2 and all(chunk[1] is None for chunk in answer)
    delta = holder.decrypt(answer, tokens)
    assert delta.shape == (tokens, outs)
    assert np.abs(delta - x @ ad.a.T @ ad.sb.T).max() < 1e-7


def test_a_secret_key_never_reaches_the_plane_and_out_of_range_values_are_refused(holder):
    secret = holder._ctx.serialize(save_secret_key=True)
    with pytest.raises(InputError, match="secret key"):
        AdapterPlane(secret, {})
    with pytest.raises(InputError, match="activations"):
        holder.encrypt(np.full((2, 2), X_MAX * 2))
    with pytest.raises(InputError, match="activations"):
        holder.encrypt(np.array([[np.nan]]))
    big = Adapter(a=np.full((1, 4), 4.0), sb=np.full((2, 1), GAIN_MAX))
    with pytest.raises(InputError, match="gain"):
        AdapterPlane(holder.plane_context(), {"q": big})


def test_the_encrypted_delta_gives_the_adapters_logits(tiny_model):
    import torch
    from peft import LoraConfig, get_peft_model

    from runners.learn import model as model_mod
    from runners.learn.he_lora import HELoRA

    tok, model = model_mod.load(tiny_model, model_mod.pick_device("cpu"))
    torch.manual_seed(2)
    pm = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                          init_lora_weights=False)).eval()
    ids = torch.tensor([tok("Ticket #3: printer offline.\nResolution:")["input_ids"]] * 2)
    with torch.no_grad():
        plain = pm(input_ids=ids).logits
        with pm.disable_adapter():
            base = pm(input_ids=ids).logits
        he = HELoRA(pm)
        with he.active():
            enc = pm(input_ids=ids).logits
        after = pm(input_ids=ids).logits
    assert (base - plain).abs().max() > 1e-2  # the adapter matters, so matching it means something
    assert (enc - plain).abs().max() < 1e-4
    assert torch.equal(after, plain)  # hooks gone, adapter back on
    s = he.report()
    assert len(s["modules"]) == 4 and s["module_calls"] == 4 and s["inputs_encrypted"] == 2  # q and v share x
    assert s["tokens"] == 2 * ids.numel() and s["max_delta_error"] < 1e-6
    assert s["bytes_to_plane"] > 0 and s["experimental"] and "ΔW" in s["does_not_protect"]
