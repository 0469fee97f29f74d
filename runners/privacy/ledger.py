"""The route's privacy ledger: every DP event of every round, written ahead.

One JSON file in the route's state folder, replaced atomically (write,
fsync, rename), so a crash at any moment leaves either the old or the new
ledger, never a torn one. A round's entry is written *before* its first
training step, charging every step it may take ("pending"); when training
ends it is settled to the steps actually taken. A round that crashes stays
charged at its planned steps: the noisy weights it produced sit in its
checkpoint, and nothing proves they were never seen. Rejected adapters stay
charged too: their ε was spent whether or not the package was promoted.

The ledger is the only record of what the route has spent. It fails closed:
an unreadable ledger stops every DP round until it is restored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tgsp.atomic import write_bytes
from tgsp.errors import InputError

from .accounting import DpEvent, epsilon

FORMAT = "tgflow.privacy-ledger/1"
FILENAME = "privacy-ledger.json"
PENDING, SETTLED, REFUSED = "pending", "settled", "refused"


@dataclass
class Ledger:
    path: Path
    route: str
    entries: list[dict[str, Any]]

    @classmethod
    def load(cls, state: Path, route: str) -> Ledger:
        path = state / FILENAME
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return cls(path, route, [])
        try:
            obj = json.loads(raw)
            if obj.get("format") != FORMAT or obj.get("route") != route or not isinstance(obj.get("entries"), list):
                raise ValueError("wrong format or route")
            for e in obj["entries"]:
                if e["status"] not in (PENDING, SETTLED, REFUSED) or not isinstance(e["round_id"], str):
                    raise ValueError("an entry has no valid status or round_id")
                if not isinstance(e["events"], list) or len(e["events"]) != (e["status"] != REFUSED):
                    raise ValueError("an entry has malformed events")
                [DpEvent.from_json(ev) for ev in e["events"]]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"privacy ledger {path} is unreadable ({exc}); the route's spent budget is unknown",
                             hint="restore the ledger from a backup; tgflow will not guess what was spent") from None
        return cls(path, route, obj["entries"])

    def events(self) -> list[DpEvent]:
        """Every charged event: settled rounds at their steps, pending ones at their plan."""
        return [ev for e in self.entries for ev in self.events_of(e)]

    @staticmethod
    def events_of(entry: dict[str, Any]) -> list[DpEvent]:
        return [DpEvent.from_json(ev) for ev in entry["events"]]

    def spent(self, delta: float, accountant: str) -> float:
        return epsilon(self.events(), delta, accountant)

    def pending(self, round_id: str) -> dict[str, Any] | None:
        return next((e for e in self.entries if e["round_id"] == round_id and e["status"] == PENDING), None)

    def begin(self, round_id: str, event: DpEvent, record: dict[str, Any]) -> dict[str, Any]:
        """Charge ``event`` before training (or keep the pending entry of the same round, on resume)."""
        entry = self.pending(round_id)
        if entry is None:
            entry = {"round_id": round_id, "status": PENDING, "events": [event.to_json()], **record}
            self.entries.append(entry)
            self._save()
        return entry

    def settle(self, round_id: str, update: dict[str, Any], *, steps: int | None = None) -> None:
        """Mark the round's entry settled with ``update``; with ``steps``, charge exactly that many."""
        entry = self.pending(round_id) or next(e for e in reversed(self.entries) if e["round_id"] == round_id)
        if steps is not None:
            entry["events"] = [{**entry["events"][0], "steps": steps}]
        entry.update({"status": SETTLED, **update})
        self._save()

    def refuse(self, round_id: str, record: dict[str, Any]) -> None:
        """A round refused before training: recorded, charged nothing."""
        self.entries.append({"round_id": round_id, "status": REFUSED, "events": [], **record})
        self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"format": FORMAT, "route": self.route, "entries": self.entries}
        write_bytes(self.path, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())
