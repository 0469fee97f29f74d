"""Novelty: does this example teach the route something it does not know?

score(x) = 1 - exp(-L(x)), where L(x) is the mean token loss of x's
completion under the route's current adapter (the base model when the
route has none). It is 1 minus the adapter's geometric-mean probability of
the completion's tokens: near 0 for what the route already answers, near 1
for what it cannot. A reworded seen ticket scores low because the adapter
already knows its answer; a ticket with a new resolution scores high.

Duplicates score 0: an exact copy (same SHA-256) or a near-duplicate (same
near key, runners/data/neardup.py) of an example the route has trained on, or
of an earlier example in the same feed.

Under DP the route's history is neither consulted nor grown, and no
per-example loss is computed: a past record must not decide which later
records are trained on, outside any round's ε. Only exact duplicates
within the feed are dropped (docs/privacy.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..data.feeds import Example
from ..data.neardup import near_key
from ..state.store import Seen


@dataclass(frozen=True)
class NoveltyResult:
    scores: list[float]
    novel: list[int]  # indices of examples that pass
    duplicates: int
    near_duplicates: int
    history_size: int
    measure: str

    def summary(self, threshold: float, minimum: int) -> dict:
        s = sorted(self.scores)
        pick = lambda q: round(s[min(len(s) - 1, int(q * len(s)))], 6) if s else None  # noqa: E731
        return {"measure": self.measure, "threshold": threshold, "min_novel_examples": minimum,
                "examples": len(self.scores), "duplicates": self.duplicates, "near_duplicates": self.near_duplicates,
                "novel": len(self.novel), "history_size": self.history_size, "score_min": pick(0),
                "score_median": pick(0.5), "score_max": pick(0.999999), "skipped": len(self.novel) < minimum,
                "histogram": histogram(self.scores)}


def histogram(scores: list[float], bins: int = 20) -> dict:
    """Counts of novelty scores in equal bins over [0, 1] (for the report's plot)."""
    counts = [0] * bins
    for x in scores:
        counts[min(bins - 1, max(0, int(x * bins)))] += 1
    return {"low": 0.0, "high": 1.0, "counts": counts}


def from_losses(losses: list[float]) -> list[float]:
    return [1.0 - math.exp(-max(0.0, x)) for x in losses]


def score(examples: list[Example], losses: list[float] | None, seen: Seen | None, threshold: float,
          *, measure: str) -> NoveltyResult:
    """Scores from ``losses`` (None: every example scores 1), duplicates against ``seen`` and
    the feed itself. With ``seen`` None (DP), only exact duplicates within the feed count."""
    scores = from_losses(losses) if losses is not None else [1.0] * len(examples)
    digests: set[str] = set(seen.digests) if seen else set()
    keys: set[str] = set(seen.near) if seen else set()
    dups = near = 0
    for i, ex in enumerate(examples):
        key = near_key(ex) if seen is not None else None
        if ex.digest in digests:
            scores[i], dups = 0.0, dups + 1
        elif key is not None and key in keys:
            scores[i], near = 0.0, near + 1
        digests.add(ex.digest)
        if key is not None:
            keys.add(key)
    novel = [i for i, s in enumerate(scores) if s >= threshold and s > 0.0]
    size = len(seen.digests) if seen else 0
    return NoveltyResult(scores, novel, dups, near, size, measure)
