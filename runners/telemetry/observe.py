"""The round's stages, timed as they run, for the telemetry sent after it ends.

A recipe marks its stages with ``stage(name)``; nothing is recorded unless the caller
opened an ``Observation`` (the CLI does when telemetry is configured), so the library
runs the same with or without it. Stages nest: a trace shows the nesting, metrics use
the outermost ones.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..state.store import evidence_of


@dataclass(frozen=True)
class Stage:
    name: str
    start_ns: int  # wall clock (time.time_ns), for traces
    end_ns: int
    depth: int  # 0: a stage of the round; 1 and more: a step inside one
    ok: bool  # False: the round ended inside this stage

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


@dataclass
class Observation:
    stages: list[Stage] = field(default_factory=list)
    evidence: Path | None = None  # the round's evidence file in the route's state folder, once committed
    _depth: int = 0


_current: contextvars.ContextVar[Observation | None] = contextvars.ContextVar("tgflow_observation", default=None)


@contextlib.contextmanager
def observing() -> Iterator[Observation]:
    """Record the stages of the round run inside this block."""
    obs = Observation()
    token = _current.set(obs)
    try:
        yield obs
    finally:
        _current.reset(token)


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    obs = _current.get()
    if obs is None:
        yield
        return
    depth, start = obs._depth, time.time_ns()
    obs._depth += 1
    ok = False
    try:
        yield
        ok = True
    finally:
        obs._depth = depth
        obs.stages.append(Stage(name, start, time.time_ns(), depth, ok))


def committed(report_path: Path) -> None:
    """The round wrote its report and evidence (route store); telemetry reads the evidence's public events."""
    obs = _current.get()
    if obs is not None:
        obs.evidence = evidence_of(report_path)
