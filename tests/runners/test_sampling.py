"""Sampling for `peft generate` (runners/learn/sampling.py), on a real model: options reach
transformers' generation config, a seed reproduces its samples, stop strings cut."""

from __future__ import annotations

import pytest

from runners.learn import model as model_mod
from runners.learn.sampling import Sampling, check, config, cut, generate
from tgsp.errors import InputError

PROMPT = "Ticket #7: The VPN client fails with error 809 after the update.\nResolution:"


@pytest.fixture(scope="module")
def lm(tiny_model):
    tok, model = model_mod.load(tiny_model, model_mod.pick_device("auto"))
    model.config.use_cache = True
    return tok, model


def test_the_same_seed_gives_the_same_samples_and_another_seed_others(lm):
    tok, model = lm
    s = check(Sampling(max_new_tokens=12, temperature=1.5, num_samples=4, seed=11))
    first, again = generate(model, tok, PROMPT, "cpu", s), generate(model, tok, PROMPT, "cpu", s)
    assert len(first) == 4 and first == again
    other = generate(model, tok, PROMPT, "cpu", check(Sampling(max_new_tokens=12, temperature=1.5, num_samples=4,
                                                                seed=12)))
    assert other != first
    assert len(set(first)) > 1  # four draws at temperature 1.5 from a random model are not all alike


def test_top_k_one_is_greedy_and_greedy_is_the_default(lm):
    tok, model = lm
    greedy = generate(model, tok, PROMPT, "cpu", check(Sampling(max_new_tokens=12)))
    assert generate(model, tok, PROMPT, "cpu", check(Sampling(max_new_tokens=12, top_k=1, seed=3))) == greedy
    assert len(greedy) == 1


def test_a_stop_string_ends_the_completion_before_it(lm):
    tok, model = lm
    full = generate(model, tok, PROMPT, "cpu", check(Sampling(max_new_tokens=24)))[0]
    word = next(w for w in full.split() if len(w) > 2)
    stopped = generate(model, tok, PROMPT, "cpu", check(Sampling(max_new_tokens=24, stop=(word,))))[0]
    assert stopped == full[:full.find(word)] and word not in stopped
    assert cut("abc STOP def", ("STOP", "c ")) == "ab" and cut("abc", ("x",)) == "abc"


def test_every_option_goes_into_transformers_generation_config(lm):
    tok, _ = lm
    cfg = config(check(Sampling(max_new_tokens=9, temperature=0.7, top_p=0.9, top_k=20, num_samples=3, seed=1,
                                stop=("\n",))), tok)
    assert (cfg.do_sample, cfg.temperature, cfg.top_p, cfg.top_k, cfg.max_new_tokens, cfg.num_return_sequences,
            cfg.stop_strings) == (True, 0.7, 0.9, 20, 9, 3, ["\n"])
    assert config(check(Sampling()), tok).do_sample is False


def test_sampling_without_a_seed_draws_one_and_reports_it():
    s = check(Sampling(temperature=0.8))
    assert s.seed is not None and s.public()["seed"] == s.seed and s.public()["mode"] == "sample"
    assert check(Sampling()).seed is None


@pytest.mark.parametrize("bad, words", [
    (Sampling(temperature=0), "--temperature 0 is out of range"),
    (Sampling(temperature=-1.0), "--temperature"),
    (Sampling(top_p=1.5), "--top-p"),
    (Sampling(top_k=0), "--top-k"),
    (Sampling(num_samples=3), "greedy decoding has one answer"),
    (Sampling(temperature=1.0, num_samples=65), "--num-samples"),
    (Sampling(max_new_tokens=0), "--max-new-tokens"),
    (Sampling(temperature=1.0, seed=-1), "--seed"),
    (Sampling(stop=("",)), "--stop"),
])
def test_options_that_mean_nothing_are_refused(bad, words):
    with pytest.raises(InputError, match=words):
        check(bad)
