"""Near-duplicate keys: two examples that differ only in numbers, case,
punctuation or spacing get the same key.

Used to keep an evaluation set out of training (a ticket that equals an
eval ticket apart from its number is leakage, not learning), and to catch
near-duplicates within one feed and against what the route has seen.
Linear in the data: one key per example, compared by set membership.
"""

from __future__ import annotations

import hashlib
import re

from .feeds import Example

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_NON_WORD = re.compile(r"[^\w#]+")


def near_key(ex: Example) -> str:
    """SHA-256 of the normalised prompt (the whole text when there is no prompt)."""
    text = ex.prompt if ex.prompt.strip() else ex.target
    words = _NON_WORD.sub(" ", _NUMBER.sub("#", text.casefold())).split()
    return hashlib.sha256(" ".join(words).encode()).hexdigest()


def split_leaks(train: list[Example], held: list[Example]) -> tuple[list[Example], int]:
    """``train`` without every example whose near key is one of ``held``'s; and how many were dropped."""
    keys = {near_key(e) for e in held} | {e.digest for e in held}
    kept = [e for e in train if e.digest not in keys and near_key(e) not in keys]
    return kept, len(train) - len(kept)


def group_split(examples: list[Example], fraction: float) -> tuple[list[Example], list[Example]]:
    """(train, held out): about ``fraction`` of the examples held out, whole near-duplicate
    groups at a time, chosen by key hash so the split is stable across rounds."""
    groups: dict[str, list[Example]] = {}
    for e in examples:
        groups.setdefault(near_key(e), []).append(e)
    want = max(1, round(len(examples) * fraction)) if fraction > 0 else 0
    held: list[Example] = []
    for key in sorted(groups):
        if len(held) >= want:
            break
        held += groups[key]
    held_ids = {id(e) for e in held}
    return [e for e in examples if id(e) not in held_ids], held
