"""Append-only hash chains, shared by the evidence chain and the audit log.

Each record is a JSON object with ``seq`` (0, 1, ...) and ``prev`` (the hex
SHA-256 of the previous record's JCS bytes; 64 zeros for the first). The
chain's head is the SHA-256 of the last record's JCS bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from .canonical import encode, sha256_hex

GENESIS = "0" * 64


def record_hash(record: dict[str, Any]) -> str:
    return sha256_hex(encode(record))


def link(body: dict[str, Any], seq: int, prev: str) -> dict[str, Any]:
    """Return ``body`` with its chain fields set (``seq``, ``prev``)."""
    record = dict(body)
    record["seq"] = seq
    record["prev"] = prev
    return record


@dataclass(frozen=True)
class ChainBreak:
    index: int
    reason: str


def check(records: Iterable[dict[str, Any]]) -> tuple[str, int, ChainBreak | None]:
    """Walk a chain. Returns (head, count, first break or None)."""
    prev = GENESIS
    count = 0
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            return prev, count, ChainBreak(index, "record is not a JSON object")
        if record.get("seq") != index:
            return prev, count, ChainBreak(index, f"sequence number is {record.get('seq')!r}, expected {index}")
        if record.get("prev") != prev:
            return prev, count, ChainBreak(index, "prev hash does not match the record before it")
        prev = record_hash(record)
        count += 1
    return prev, count, None
