"""The evidence chain and the provenance statement.

Evidence is JSON Lines: one canonical record per line, hash-chained
(see ``hashchain``). Records are ``{seq, prev, type, time, data}``. The
manifest records the chain's head and length, so no event can be dropped,
reordered or edited without breaking a signature.

The provenance statement is an in-toto Statement v1 with a SLSA
provenance v1 predicate, naming every payload file as a subject.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

from . import clock, hashchain
from .canonical import encode, parse
from .errors import EvidenceError, FormatError, InputError
from .inputfile import read_input

MAX_EVENTS = 100_000
_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:-]{0,127}\Z")
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://tgflow.dev/tgsp-build/v1"


def event(type_: str, data: Any, when: datetime) -> dict[str, Any]:
    return {"type": type_, "time": clock.fmt(when), "data": data}


def append(records: list[dict[str, Any]], bodies: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    out = list(records)
    head = hashchain.record_hash(out[-1]) if out else hashchain.GENESIS
    for body in bodies:
        record = hashchain.link(body, len(out), head)
        head = hashchain.record_hash(record)
        out.append(record)
    return out


def encode_jsonl(records: list[dict[str, Any]]) -> bytes:
    return b"".join(encode(r) + b"\n" for r in records)


def head_of(records: list[dict[str, Any]]) -> str:
    return hashchain.record_hash(records[-1]) if records else hashchain.GENESIS


def parse_jsonl(data: bytes) -> list[dict[str, Any]]:
    """Strictly parse and check a chain. Raises EvidenceError."""
    if data and not data.endswith(b"\n"):
        raise EvidenceError("evidence does not end with a newline")
    lines = data.split(b"\n")[:-1] if data else []
    if len(lines) > MAX_EVENTS:
        raise EvidenceError(f"evidence has more than {MAX_EVENTS} events")
    records = []
    for i, line in enumerate(lines):
        try:
            rec = parse(line, what=f"evidence event {i}", canonical=True)
        except FormatError as exc:
            raise EvidenceError(str(exc)) from None
        if not isinstance(rec, dict) or set(rec) != {"seq", "prev", "type", "time", "data"}:
            raise EvidenceError(f"evidence event {i} must have exactly seq, prev, type, time, data")
        if not isinstance(rec["type"], str) or not _TYPE.match(rec["type"]):
            raise EvidenceError(f"evidence event {i} has a bad type")
        try:
            clock.parse(rec["time"], what=f"evidence event {i} time")
        except FormatError as exc:
            raise EvidenceError(str(exc)) from None
        records.append(rec)
    _, _, brk = hashchain.check(records)
    if brk:
        raise EvidenceError(f"evidence chain breaks at event {brk.index}: {brk.reason}")
    return records


def load_user_events(path: str | Path, default_time: datetime) -> list[dict[str, Any]]:
    """Read ``--evidence EVENTS.jsonl``: one object per line with ``type``,
    optional ``time`` (ISO 8601) and optional ``data``."""
    path = Path(path)
    try:
        text = read_input(path, "evidence file").decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"evidence file {path} is not UTF-8 text") from None
    bodies = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = parse(line.encode("utf-8"), what=f"{path}:{n}: event")
        except FormatError as exc:
            raise InputError(str(exc)) from None
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), str) or not _TYPE.match(obj["type"]):
            raise InputError(f"{path}:{n}: each event needs a \"type\" string (letters, digits, . _ / : -)")
        extra = set(obj) - {"type", "time", "data"}
        if extra:
            raise InputError(f"{path}:{n}: unknown field(s) {', '.join(sorted(extra))}; put them under \"data\"")
        when = clock.parse_user(obj["time"], what=f"{path}:{n}: time") if "time" in obj else default_time
        try:
            encode(obj.get("data"))
        except FormatError as exc:
            raise InputError(f"{path}:{n}: {exc}") from None
        bodies.append(event(obj["type"], obj.get("data"), when))
    return bodies


def provenance_statement(
    files: list[dict[str, Any]],
    *,
    builder: str,
    started: datetime,
    finished: datetime,
    external: dict[str, Any] | None = None,
    dependencies: list[dict[str, Any]] | None = None,
    build_type: str = BUILD_TYPE,
) -> dict[str, Any]:
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": f["path"], "digest": {"sha256": f["sha256"]}} for f in files],
        "predicateType": SLSA_PROVENANCE,
        "predicate": {
            "buildDefinition": {
                "buildType": build_type,
                "externalParameters": external or {},
                "internalParameters": {},
                "resolvedDependencies": dependencies or [],
            },
            "runDetails": {
                "builder": {"id": builder},
                "metadata": {"startedOn": clock.fmt(started), "finishedOn": clock.fmt(finished)},
            },
        },
    }


def check_provenance(statement: Any, files: list[dict[str, Any]]) -> None:
    """The provenance must be an in-toto Statement v1 whose subjects are
    exactly the manifest's files, in order, with their plaintext SHA-256."""
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise EvidenceError(f"provenance is not an in-toto Statement ({STATEMENT_TYPE})")
    if statement.get("predicateType") != SLSA_PROVENANCE:
        raise EvidenceError(f"provenance predicateType must be {SLSA_PROVENANCE}")
    want = [{"name": f["path"], "digest": {"sha256": f["sha256"]}} for f in files]
    if statement.get("subject") != want:
        raise EvidenceError("provenance subjects do not match the manifest's files and digests")
