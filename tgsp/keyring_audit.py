"""The keyring's audit log: a hash-chained record of every key operation, and beside it the
log's length and head, so that a log cut short (a crash, a careless edit, a restore of the
log alone) no longer reads as intact.

    audit.jsonl   one record per key operation
    audit.head    the log's length and the hash of its last record
"""

from __future__ import annotations

import os
from typing import Any

from . import clock, hashchain
from .atomic import write_bytes
from .canonical import encode, is_int, parse
from .errors import FormatError, KeyringError
from .inputfile import read_input

MAX_AUDIT = 64 << 20
AUDIT_HEAD = "audit.head"
AUDIT_HEAD_TYPE = "tgflow-audit-head/1"


class AuditLog:
    """The keyring's audit log. Mixed into Keyring, whose ``home``, ``now`` and ``_records`` (the
    chain ``_locked`` checked) it uses."""

    def _audit(self, op: str, name: str, keyid: str, detail: dict[str, Any]) -> None:
        """Append one record (under the lock; ``_locked`` checked the chain),
        then move the head file that makes a cut-off tail detectable."""
        records = self._records
        head, _, _ = hashchain.check(records)
        record = hashchain.link({"op": op, "time": clock.fmt(self.now()), "name": name, "keyid": keyid,
                                 "detail": detail}, len(records), head)
        with open(self.home / "audit.jsonl", "ab") as f:
            f.write(encode(record) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        records.append(record)
        write_bytes(self.home / AUDIT_HEAD, encode({"type": AUDIT_HEAD_TYPE, "count": len(records),
                                                    "head": hashchain.record_hash(record)}) + b"\n", mode=0o600)

    def audit_records(self) -> list[Any]:
        path = self.home / "audit.jsonl"
        if not path.exists():
            return []
        out = []
        data = read_input(path, "audit log", max_bytes=MAX_AUDIT, error=KeyringError)
        for n, line in enumerate(data.splitlines()):
            try:
                out.append(parse(line, what="audit record"))
            except FormatError:
                out.append({"unparseable": n})
        return out

    def _recorded_head(self) -> tuple[int, str] | None:
        path = self.home / AUDIT_HEAD
        if not path.exists():
            return None
        try:
            obj = parse(read_input(path, "audit head", max_bytes=4096, error=KeyringError), what="audit head")
        except FormatError:
            obj = None
        if not isinstance(obj, dict) or obj.get("type") != AUDIT_HEAD_TYPE or not is_int(obj.get("count")) \
                or not isinstance(obj.get("head"), str):
            return (-1, "")
        return obj["count"], obj["head"]

    def audit(self) -> tuple[list[Any], hashchain.ChainBreak | None, str]:
        """The log, its first break (a cut-off tail counts), and its head."""
        records = self.audit_records()
        head, count, brk = hashchain.check(records)
        recorded = self._recorded_head()
        if brk is None and recorded is not None:
            want, want_head = recorded
            if want < 0:
                brk = hashchain.ChainBreak(count, f"{AUDIT_HEAD} is unreadable")
            elif count < want:
                brk = hashchain.ChainBreak(count, f"log was truncated: {AUDIT_HEAD} records {want} records, "
                                                  f"the log holds {count}")
            elif want and hashchain.record_hash(records[want - 1]) != want_head:
                brk = hashchain.ChainBreak(want - 1, f"record {want - 1} is not the one {AUDIT_HEAD} records")
        return records, brk, head
