"""Decoding for `peft generate`: greedy by default, or sampled with the options users expect.

Every option goes through transformers' own GenerationConfig (temperature, top_p, top_k,
max_new_tokens, num_return_sequences, stop_strings); nothing here re-implements a sampler.
A sampled run is seeded: the same seed gives the same samples on the same machine and
versions, and a run without --seed draws one and reports it, so any sample can be re-made.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from tgsp.errors import InputError

MAX_SAMPLES = 64
MAX_STOPS = 16
MAX_STOP_CHARS = 200
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 32
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    num_samples: int = 1
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @property
    def sampled(self) -> bool:
        return any(v is not None for v in (self.temperature, self.top_p, self.top_k))

    def public(self) -> dict[str, Any]:
        return {**asdict(self), "stop": list(self.stop), "mode": "sample" if self.sampled else "greedy"}


def check(s: Sampling) -> Sampling:
    """Refuse options that cannot mean anything (exit 2); with sampling and no seed, draw one."""
    if not 1 <= s.max_new_tokens <= 4096:
        raise InputError(f"--max-new-tokens {s.max_new_tokens} is out of range", hint="1 to 4096")
    if s.temperature is not None and not 0 < s.temperature <= 100:
        raise InputError(f"--temperature {s.temperature} is out of range",
                         hint="a number above 0 (1.0 samples the model as it is); leave it out for greedy decoding")
    if s.top_p is not None and not 0 < s.top_p <= 1:
        raise InputError(f"--top-p {s.top_p} is out of range", hint="a probability above 0, at most 1")
    if s.top_k is not None and not 1 <= s.top_k <= 1_000_000:
        raise InputError(f"--top-k {s.top_k} is out of range", hint="a whole number from 1")
    if not 1 <= s.num_samples <= MAX_SAMPLES:
        raise InputError(f"--num-samples {s.num_samples} is out of range", hint=f"1 to {MAX_SAMPLES}")
    if s.num_samples > 1 and not s.sampled:
        raise InputError("greedy decoding has one answer, so --num-samples needs sampling",
                         hint="add --temperature 0.8 (or --top-p / --top-k)")
    if s.seed is not None and not 0 <= s.seed <= MAX_SEED:
        raise InputError(f"--seed {s.seed} is out of range", hint=f"0 to {MAX_SEED}")
    if len(s.stop) > MAX_STOPS or any(not t or len(t) > MAX_STOP_CHARS for t in s.stop):
        raise InputError(f"--stop takes up to {MAX_STOPS} non-empty strings of at most {MAX_STOP_CHARS} characters")
    if s.sampled and s.seed is None:
        return Sampling(**{**asdict(s), "seed": int.from_bytes(os.urandom(8), "big") & MAX_SEED})
    return s


def config(s: Sampling, tok):
    """transformers' GenerationConfig for ``s``."""
    from transformers import GenerationConfig

    kw: dict[str, Any] = {"max_new_tokens": s.max_new_tokens, "num_return_sequences": s.num_samples,
                          "pad_token_id": tok.pad_token_id, "do_sample": s.sampled}
    if s.sampled:  # transformers' defaults for the rest (temperature 1.0, top_p 1.0, top_k 50) would apply
        kw.update(temperature=s.temperature if s.temperature is not None else 1.0,
                  top_p=s.top_p if s.top_p is not None else 1.0, top_k=s.top_k if s.top_k is not None else 0)
    if s.stop:
        kw["stop_strings"] = list(s.stop)
    return GenerationConfig(**kw)


def generate(model, tok, prompt: str, device: str, s: Sampling) -> list[str]:
    """``s.num_samples`` completions of ``prompt``, each cut before its first stop string."""
    import torch

    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    ids = torch.tensor([bos + tok(prompt, add_special_tokens=False)["input_ids"]], device=device)
    if s.sampled:
        torch.manual_seed(s.seed)  # the global generator, which transformers' sampling draws from
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config(s, tok),
                             tokenizer=tok if s.stop else None)
    return [cut(tok.decode(row[ids.shape[1]:], skip_special_tokens=True), s.stop) for row in out]


def cut(text: str, stop: tuple[str, ...]) -> str:
    """``text`` up to (not including) the earliest stop string, as completion APIs return it."""
    ends = [i for i in (text.find(t) for t in stop) if i >= 0]
    return text[:min(ends)] if ends else text
