"""What every stage reads: the round (``Round``), how it ended (``RoundResult``) and the
outcomes a round ends with. The recipes (runners/recipes/) build a ``Round`` and run the
stages over it; the stages only read and record through it."""

from __future__ import annotations

import contextlib
import functools
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NoReturn

import tgsp
from tgsp import clock, evidence
from tgsp.errors import RoundOutcome

from ..privacy.modes import PrivacyMode
from ..state.checkpoint import CheckpointStore
from ..state.registry import Registry, at as registry_at
from ..state.store import ROUND, RouteStore
from ..telemetry import observe
from .inputs import Opened

# How a round ends when it does not raise (the refusals are RoundOutcome errors, tgsp/errors.py).
PACKAGED = "packaged"  # an adapter was released and registered as the route's candidate
UPDATE = "update"  # a federated site wrote its update for the aggregator
SUMMED = "summed"  # n2he: the aggregator wrote an encrypted sum for the key holder
FOLLOWER = "follower"  # a rank other than 0 under torchrun: it trained; rank 0 wrote everything

# progress(stage, done, total, loss, tokens): loss NaN and tokens -1 where there is none to show
# (a stage without one, or a DP round, whose losses and token counts are private).
Progress = Callable[[str, int, int, float, int], None]


@dataclass
class RoundResult:
    outcome: str
    report: dict[str, Any]
    package: Path | None = None
    package_id: str | None = None


@dataclass
class Round:
    """What every stage reads: the opened spec, the route's store and registry, keys, clock, signals."""

    opened: Opened
    store: RouteStore
    registry: Registry
    keyring: tgsp.Keyring
    passphrase: Callable[[], str]
    signer: Any
    mode: PrivacyMode
    now: clock.Clock = clock.utcnow
    stop: threading.Event | None = None
    progress: Progress | None = None
    events: list[dict] = field(default_factory=list)
    started: Any = None
    world: Any = None  # runners/distributed/world.py under torchrun (this is rank 0); None in one process
    led: list = field(default_factory=list)  # set once the training job went to the other ranks
    require_plan: str | None = None  # peft run --require-plan: the least DP plan verdict to train on
    notes: Callable[[str, bool], None] | None = None  # (line, is a warning): what the operator should read now

    @property
    def spec(self):
        return self.opened.spec

    @functools.cached_property
    def checkpoints(self) -> CheckpointStore:
        return CheckpointStore(self.store.checkpoint_dir, self.store.keys)

    def record(self, type_: str, data: Any) -> None:
        self.events.append(evidence.event(type_, data, self.now()))

    def note(self, line: str, *, warning: bool = False) -> None:
        if self.notes:
            self.notes(line, warning)

    @contextlib.contextmanager
    def stage(self, name: str):
        """progress(stage, 0, 1) on entry, (1, 1) on exit; a step inside a stage, for traces."""
        if self.progress:
            self.progress(name, 0, 1, math.nan, -1)
        with observe.stage(name):
            yield
        if self.progress:
            self.progress(name, 1, 1, math.nan, -1)

    def commit(self, outcome: str, report: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
        """The round's report and evidence, then its line in the route log (the commit)."""
        path = self.store.write_report(report, self.events)
        observe.committed(path)
        self.store.append(ROUND, {"outcome": outcome, "report": path.name, "spec_sha256": self.opened.digest,
                                  **(extra or {})})
        return path

    def reject(self, kind: type[RoundOutcome], message: str, report: dict[str, Any],
               remedy: str | None = None) -> NoReturn:
        """Settle, record the outcome, write evidence and report, log it, and raise ``kind``
        (its hint: ``remedy``, the most likely fix, then the report's path)."""
        self.mode.settle(self, kind.outcome)
        self.record("tgflow.round.end", {"outcome": kind.outcome, "reason": message})
        report = {**report, "outcome": kind.outcome, "reason": message}
        path = self.commit(kind.outcome, report, {"reason": message})
        report["report_path"] = str(path)  # for the caller; the file itself is at that path
        raise kind(message, report, hint=f"{remedy}; report: {path}" if remedy else f"report: {path}")


def registry_for(opened: Opened, keyring: tgsp.Keyring, now: clock.Clock = clock.utcnow) -> Registry:
    # One editor state per machine: the keyring folder's, which route commands use too; where a
    # job mounts the keyring read-only from Secrets, the route's (durable) state folder.
    home = keyring.home
    pins = home if home.is_dir() and os.access(home, os.W_OK) else opened.state
    return registry_at(opened.registry_location, keyring.trust_policy(), now, editors_at=pins)
