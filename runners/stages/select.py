"""Stage 2, selection: what this round trains on and what it is judged on.

Novelty (runners/learn/novelty.py) picks the examples the route does not know
yet; the evaluation split is kept out of training by near-duplicate key
(runners/data/neardup.py); replay adds a sample of earlier releases' training
data (non-DP routes only); earlier releases' held-out sets are kept for the
forgetting measure.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tgsp.canonical import encode, sha256_hex
from tgsp.errors import InputError, NoveltySkipped

from ..data.feeds import Example
from ..data.neardup import group_split, near_key, split_leaks
from ..learn import novelty
from ..learn.batches import Tokenized, tokenize
from ..learn.evaluate import example_losses
from .inputs import Inputs


@dataclass
class Selection:
    novel: list[Example]  # every novel example this round consumed (trained on or held out)
    train: list[Example]  # what the optimizer sees (novel minus held out and leaks, plus replay)
    eval: list[Example]
    train_data: list[Tokenized]
    summary: dict
    leaks_dropped: int
    replayed: int
    earlier: list[tuple[int, list[Example]]]  # (version, held-out examples) of earlier releases

    @property
    def digest(self) -> str:
        return sha256_hex(encode([[e.prompt, e.target] for e in self.train]))


def select(rnd, i: Inputs) -> Selection:
    spec, policy = rnd.spec, rnd.spec.policy
    examples = i.feed.examples
    with rnd.stage("scoring novelty"):
        seen = rnd.store.seen() if rnd.mode.uses_history else None
        losses = _losses(rnd, i, examples) if seen is not None and i.parent is not None else None
        measure = ("1 - exp(-completion loss) under the production adapter" if losses is not None else
                   "none: the route has no production adapter yet, so every example is new to it" if seen is not None
                   else "none (privacy mode dp): only exact duplicates within the feed are dropped")
        nov = novelty.score(examples, losses, seen, policy.novelty_threshold, measure=measure)
    summary = nov.summary(policy.novelty_threshold, policy.min_novel_examples)
    rnd.record("tgflow.novelty", summary)
    if summary["skipped"]:
        rnd.reject(NoveltySkipped, f"only {len(nov.novel)} novel examples (need {policy.min_novel_examples} with "
                   f"novelty >= {policy.novelty_threshold}); round skipped", {"novelty": summary})
    novel = [examples[k] for k in nov.novel]
    if i.eval_feed is not None:
        eval_ex = i.eval_feed.examples
        train, leaks = split_leaks(novel, eval_ex)
    else:
        train, eval_ex = group_split(novel, policy.eval_fraction)
        leaks = 0
        if not eval_ex:
            raise InputError("no evaluation data: give an eval feed or policy.eval_fraction > 0")
    if not train:
        raise InputError("every novel example is a near-duplicate of the eval set; nothing is left to train on",
                         hint="give an eval feed that is not drawn from the training data")
    retained = rnd.store.retained() if rnd.mode.uses_history else []
    replay = _replay(retained, train, eval_ex, policy.replay_fraction, spec.training.seed)
    train_all = train + replay
    sel = Selection(novel, train_all, eval_ex, tokenize(i.tok, train_all, spec.training.max_seq_len), summary,
                    leaks, len(replay), [(v, held) for v, _, held in retained if held])
    rnd.record("tgflow.selection", {"train_examples": len(train_all), "eval_examples": len(eval_ex),
                                    "eval_leaks_dropped": leaks, "replayed": len(replay),
                                    "replay_fraction": policy.replay_fraction,
                                    "earlier_heldout": [[v, len(h)] for v, h in sel.earlier]})
    return sel


def dp_training_set(feed: list[Example], eval_ex: list[Example]) -> list[Example]:
    """What a DP round trains on: the feed without in-feed exact duplicates and without
    near-duplicates of the (public) eval set. ``peft budget`` plans with its size."""
    nov = novelty.score(feed, None, None, 0.0, measure="none")
    return split_leaks([feed[k] for k in nov.novel], eval_ex)[0]


def _losses(rnd, i: Inputs, examples: list[Example]) -> list[float]:
    """Each example's completion loss under the route's production adapter (the base model without one)."""
    data = tokenize(i.tok, examples, rnd.spec.training.max_seq_len)
    return example_losses(i.model, i.tok, data, i.device.name)


def _replay(retained, train: list[Example], eval_ex: list[Example], fraction: float, seed: int) -> list[Example]:
    if fraction <= 0 or not retained:
        return []
    blocked = {near_key(e) for e in eval_ex} | {e.digest for e in train}
    pool = [e for _, old, _ in retained for e in old if e.digest not in blocked and near_key(e) not in blocked]
    k = min(len(pool), round(len(train) * fraction))
    return random.Random(seed).sample(pool, k)
