"""The route store: one module owns a route's state folder.

    <state>/store.json            {"format": "tgflow.route-store/1", "route"}  (written last on creation)
    <state>/lock                  flock; names its holder (runners/state/locks.py)
    <state>/log.jsonl             append-only, hash-chained route log (rounds, outcomes, migration)
    <state>/log.head.json         the log's length and head: a log cut short is detected
    <state>/privacy-ledger.json   the DP ledger, write-ahead (runners/privacy/ledger.py)
    <state>/audit-key.json        the key of the keyed digests of private data (0600)
    <state>/novelty/seen.sealed   digests and near-duplicate keys of everything trained on (non-DP)
    <state>/retained/vN.sealed    a release's training and held-out examples (non-DP; replay, forgetting)
    <state>/federation/residual.sealed  a federated site's top-k error feedback (what its updates left out)
    <state>/checkpoint/           the running round's resumable checkpoint (checkpoint.py)
    <state>/rounds/               each round's report and evidence

Every change happens inside ``session()``, under the route's lock. The log
is the route's state: a change commits when its one log line is written and
fsynced; a crash before that leaves nothing committed (a torn last line is
dropped on the next open), and files written ahead of the line are named by
it or swept. Folders from before the store migrate on first use.

Files that hold private data or weights (``*.sealed`` and the checkpoint) are
sealed to the route's recipient keys (keys.py): a store opened for a round
has its ``keys``; plaintext ones from earlier tgflow versions are sealed when the
next round opens the store, and their plaintext deleted.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from tgsp import clock, evidence, hashchain
from tgsp.atomic import write_bytes
from tgsp.canonical import encode, is_int, parse
from tgsp.errors import EvidenceError, FormatError, InputError
from tgsp.inputfile import read_input

from ..data.feeds import Example
from . import migrate
from .keys import StateKeys
from .migrate import AUDIT_FORMAT, RESIDUAL_AD, RESIDUAL_FILE, SEEN_AD, SEEN_FILE, SEEN_FORMAT
from .locks import locked

STORE_FORMAT = "tgflow.route-store/1"
HEAD_FORMAT = "tgflow.route-log-head/1"
RETAINED_FORMAT = "tgflow.retained-examples/1"
REPORT_FORMAT = "tgflow.round-report/1"
CREATED, MIGRATED, RECOVERED, ROUND = ("tgflow.route.created", "tgflow.route.migrated", "tgflow.route.recovered",
                                       "tgflow.route.round")
SEALED = "tgflow.route.sealed"  # plaintext state of an earlier tgflow, sealed and deleted
MAX_LOG = 64 << 20
MAX_DOC = 256 << 20


@dataclass(frozen=True)
class Seen:
    digests: frozenset[str]
    near: frozenset[str]


class RouteStore:
    def __init__(self, folder: Path, route: str, *, now: clock.Clock = clock.utcnow,
                 keys: StateKeys | None = None) -> None:
        self.folder, self.route, self.now, self.keys = Path(folder), route, now, keys
        self.records: list[dict[str, Any]] = []
        self._held = False

    # --- paths ----------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        return self.folder / "checkpoint"

    @property
    def rounds_dir(self) -> Path:
        return self.folder / "rounds"

    # --- the session ------------------------------------------------------------------
    @contextlib.contextmanager
    def session(self, command: str, *, wait: float = 0.0, open_log: bool = True) -> Iterator[RouteStore]:
        """Hold the route's lock (RouteBusy if another command still has it after ``wait``
        seconds), then open or migrate the store (``open_log=False``: only the lock, to repair it)."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        with locked(self.folder / "lock", f"route {self.route}", command, wait=wait) as held:
            self._held = True
            try:
                if not open_log:
                    yield self
                    return
                self._open()
                if held.stale:
                    self.append(RECOVERED, {"holder": held.stale, "note": "the last holder died holding the lock"})
                yield self
            finally:
                self._held = False

    def view(self) -> RouteStore:
        """Read the log without the lock (route show, history, budget); changes nothing."""
        if (self.folder / "store.json").exists():
            self._check_store()
            self.records = self._load_log(repair=False)
        return self

    def _open(self) -> None:
        if not (self.folder / "store.json").exists():
            self._create()
        self._check_store()
        self.records = self._load_log(repair=True)
        if self.keys is not None:
            self._seal_plaintext()

    def _check_store(self) -> None:
        obj = self._doc(self.folder / "store.json", STORE_FORMAT, "route store")
        if obj.get("route") != self.route:
            raise InputError(f"route store {self.folder} belongs to route {obj.get('route')!r}, not {self.route!r}",
                             hint="give each route its own output.state_dir")

    def _create(self) -> None:
        """A new store, or one migrated from a pre-store folder (idempotent if a crash cut it short)."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not (self.folder / "log.jsonl").exists():
            self.records = []
            self.append(CREATED, {"route": self.route, "store": STORE_FORMAT})
            legacy = migrate.legacy_release(self.folder)
            if legacy is not None or any((self.folder / n).exists() for n in ("audit-key", "novelty", "rounds")):
                self.append(MIGRATED, {"from": "pre-store folder", "release": legacy})
        else:
            self.records = self._load_log(repair=True)
        migrate.migrate_files(self.folder)
        write_bytes(self.folder / "store.json", encode({"format": STORE_FORMAT, "route": self.route}) + b"\n")

    # --- the log ------------------------------------------------------------------
    def _load_log(self, *, repair: bool) -> list[dict[str, Any]]:
        # The head first: a writer appends its line before it moves the head, so a reader
        # without the lock (view) never sees a head ahead of the log it reads next.
        head = self._read_head()
        path = self.folder / "log.jsonl"
        data = read_input(path, "route log", max_bytes=MAX_LOG) if path.exists() else b""
        if data and not data.endswith(b"\n"):  # a torn last line: never committed
            data = data[: data.rfind(b"\n") + 1]
            if repair:
                with open(path, "r+b") as f:
                    f.truncate(len(data))
                    os.fsync(f.fileno())
        try:
            records = evidence.parse_jsonl(data)
        except EvidenceError as exc:
            raise InputError(f"route log {path} is broken ({exc}); the route's history cannot be trusted",
                             hint="restore the state folder from a backup") from None
        self._check_head(head, records)
        return records

    def _read_head(self) -> dict[str, Any] | None:
        path = self.folder / "log.head.json"
        return self._doc(path, HEAD_FORMAT, "route log head") if path.exists() else None

    def _check_head(self, head: dict[str, Any] | None, records: list[dict[str, Any]]) -> None:
        if head is None:
            # Only the store's first line can be committed without a head (a crash before the
            # head file was written); a missing head on a longer log hides a cut-off tail.
            if len(records) > 1:
                raise InputError(f"route log {self.folder / 'log.jsonl'} has {len(records)} entries but no "
                                 "log.head.json: its end cannot be checked (deleted with a cut-off tail?)",
                                 hint=f"restore the state folder from a backup; if this log is complete, "
                                      f"run: tgflow route repair-log {self.route} --state {self.folder}")
            return
        count = head.get("count")
        if not is_int(count) or count > len(records) or (count and hashchain.record_hash(records[count - 1]) != head.get("head")):
            raise InputError(f"route log {self.folder / 'log.jsonl'} was cut short or replaced "
                             f"(log.head.json records {count} entries, the log holds {len(records)})",
                             hint="restore the state folder from a backup")

    def repair_head(self) -> dict[str, Any]:
        """Under the lock: re-record the head of a log the operator vouches is complete (a
        missing or stale log.head.json), after the log's own hash chain checked out."""
        if not self._held:
            raise RuntimeError("route store changed outside its session")
        self._check_store()
        data = read_input(self.folder / "log.jsonl", "route log", max_bytes=MAX_LOG)
        try:
            records = evidence.parse_jsonl(data[: data.rfind(b"\n") + 1])
        except EvidenceError as exc:
            raise InputError(f"route log {self.folder / 'log.jsonl'} is broken ({exc}); it cannot be vouched for",
                             hint="restore the state folder from a backup") from None
        if not records:
            raise InputError(f"route log {self.folder / 'log.jsonl'} is empty", hint="restore it from a backup")
        self.records = records
        self._write_head()
        return {"entries": len(records), "head": hashchain.record_hash(records[-1])}

    def _write_head(self) -> None:
        write_bytes(self.folder / "log.head.json", encode({"format": HEAD_FORMAT, "count": len(self.records),
                                                           "head": hashchain.record_hash(self.records[-1])}) + b"\n")

    def append(self, type_: str, data: Any) -> dict[str, Any]:
        """Commit one change: one log line, fsynced, then the head file."""
        if not self._held:
            raise RuntimeError("route store changed outside its session")
        record = evidence.append(self.records, [evidence.event(type_, data, self.now())])[-1]
        fd = os.open(self.folder / "log.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "ab") as f:
            f.write(encode(record) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        self.records.append(record)
        self._write_head()
        return record

    # --- what the log says ------------------------------------------------------------
    def rounds(self) -> list[dict[str, Any]]:
        return [r["data"] for r in self.records if r["type"] == ROUND]

    def releases(self) -> list[dict[str, Any]]:
        """Every packaged round (and a migrated folder's last release), oldest first."""
        out = [r["data"]["release"] for r in self.records if r["type"] == MIGRATED and r["data"].get("release")]
        return out + [d for d in self.rounds() if d.get("outcome") == "packaged"]

    def next_version(self) -> int:
        return max((int(r["version"]) for r in self.releases()), default=0) + 1

    # --- files the store owns -------------------------------------------------------------
    def _doc(self, path: Path, fmt: str, what: str) -> dict[str, Any]:
        try:
            obj = parse(read_input(path, what, max_bytes=MAX_DOC), what=f"{what} {path}")
        except FormatError as exc:
            raise InputError(f"{exc}", hint="restore the state folder from a backup") from None
        if not isinstance(obj, dict) or obj.get("format") != fmt:
            raise InputError(f"{what} {path} is not a {fmt} document", hint="restore the state folder from a backup")
        return obj

    def _write_doc(self, path: Path, obj: dict[str, Any], mode: int = 0o600) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_bytes(path, encode(obj) + b"\n", mode=mode)

    def audit_key(self) -> bytes:
        path = self.folder / "audit-key.json"
        if not path.exists():
            self._write_doc(path, {"format": AUDIT_FORMAT, "key": os.urandom(32).hex()})
        try:
            key = bytes.fromhex(self._doc(path, AUDIT_FORMAT, "audit key")["key"])
            if len(key) == 32:
                return key
        except (ValueError, TypeError, KeyError):
            pass
        raise InputError(f"audit key {path} is damaged", hint="restore it from a backup (it keys this route's "
                         "evidence digests)")

    # --- sealed files: private data and weights (keys.py) ----------------------------------
    def _sealed(self, path: Path, ad: dict[str, Any], what: str) -> bytes | None:
        if self.keys is None:  # its plaintext predecessor may be there, unsealed: never read around it
            raise RuntimeError("route store opened without its keys reads private state")
        if not path.exists():
            return None
        return self.keys.open(read_input(path, what, max_bytes=MAX_DOC), ad, what, path)

    def _write_sealed(self, path: Path, data: bytes, ad: dict[str, Any]) -> None:
        if self.keys is None:
            raise RuntimeError("route store opened without its keys writes private state")
        blob = self.keys.seal(data, ad)
        if len(blob) > MAX_DOC:  # what could not be read back is not written
            raise InputError(f"{path.name} would be {len(blob)} bytes, over the {MAX_DOC} a route state file holds",
                             hint="train on fewer examples per round (feed.max_examples)")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_bytes(path, blob, mode=0o600)

    def _sealed_doc(self, path: Path, ad: dict[str, Any], fmt: str, what: str) -> dict[str, Any] | None:
        data = self._sealed(path, ad, what)
        if data is None:
            return None
        obj = parse(data, what=f"{what} {path}")
        if not isinstance(obj, dict) or obj.get("format") != fmt:
            raise InputError(f"{what} {path} is not a {fmt} document", hint="restore the state folder from a backup")
        return obj

    def seen(self) -> Seen:
        obj = self._sealed_doc(self.folder / SEEN_FILE, SEEN_AD, SEEN_FORMAT, "novelty record") or {}
        return Seen(frozenset(obj.get("digests", [])), frozenset(obj.get("near", [])))

    def add_seen(self, digests: set[str], near: set[str]) -> None:
        old = self.seen()
        self._write_sealed(self.folder / SEEN_FILE, encode({
            "format": SEEN_FORMAT, "digests": sorted(old.digests | digests), "near": sorted(old.near | near)}), SEEN_AD)

    def retain(self, version: int, train: list[Example], heldout: list[Example]) -> None:
        name, ad = migrate.retained(version)
        self._write_sealed(self.folder / name, encode({
            "format": RETAINED_FORMAT, "version": version,
            "train": [[e.prompt, e.target] for e in train], "heldout": [[e.prompt, e.target] for e in heldout]}), ad)

    def retained(self) -> list[tuple[int, list[Example], list[Example]]]:
        """(version, train, held-out) of every retained release, oldest first."""
        out = []
        for r in self.releases():
            v = int(r["version"])
            name, ad = migrate.retained(v)
            obj = self._sealed_doc(self.folder / name, ad, RETAINED_FORMAT, "retained examples")
            if obj is not None:
                as_ex = lambda rows: [Example(str(p), str(t)) for p, t in rows]  # noqa: E731
                out.append((v, as_ex(obj["train"]), as_ex(obj["heldout"])))
        return out

    def residual(self) -> dict[str, Any]:
        """A federated site's error-feedback residual (numpy arrays by tensor name); empty if none."""
        from safetensors import SafetensorError
        from safetensors.numpy import load

        path = self.folder / RESIDUAL_FILE
        data = self._sealed(path, RESIDUAL_AD, "error-feedback residual")
        if data is None:
            return {}
        try:
            return load(data)
        except (SafetensorError, ValueError) as exc:
            raise InputError(f"error-feedback residual {path} is damaged ({exc})",
                             hint="delete it: the next update is then sent without the carried remainder") from None

    def set_residual(self, tensors: dict[str, Any] | None) -> None:
        from safetensors.numpy import save

        path = self.folder / RESIDUAL_FILE
        if not tensors:
            path.unlink(missing_ok=True)
            return
        self._write_sealed(path, save(tensors), RESIDUAL_AD)

    def _seal_plaintext(self) -> None:
        """Plaintext state of earlier tgflow versions, sealed and then deleted (logged once per file)."""
        done = []
        for old, new, ad in migrate.plaintext_files(self.folder):
            name = str(old.relative_to(self.folder))
            if old.is_symlink():  # never followed: it could point at any file this process can read
                old.unlink()
                done.append(f"{name} (a link, removed unread)")
                continue
            self._write_sealed(new, read_input(old, "route state", max_bytes=MAX_DOC), ad)
            old.unlink()
            done.append(name)
        if done:
            self.append(SEALED, {"files": done, "note": "plaintext state sealed to the route's recipient keys"})

    def write_report(self, report: dict[str, Any], events: list[dict[str, Any]]) -> Path:
        stamp = clock.fmt(self.now()).replace(":", "")
        path = self.rounds_dir / f"{stamp}-{report['outcome']}.report.json"
        self.rounds_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_bytes(evidence_of(path), evidence.encode_jsonl(evidence.append([], events)))
        doc = {"format": REPORT_FORMAT, **report}
        write_bytes(path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())
        return path


def evidence_of(report: Path) -> Path:
    """The evidence file written beside a round's report."""
    return report.with_name(report.name.removesuffix(".report.json") + ".evidence.jsonl")
