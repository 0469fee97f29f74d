"""What a round shows while it runs: a progress bar on a terminal, plain lines in a log.

A CronJob's or CI's stderr is not a terminal, and a bar there prints nothing until the
end. There, each stage gets a line when it starts and when it ends, and training a
line at its first step, at every tenth of its steps and at least every ``every``
seconds, with the step, the speed, the time left and the loss. Under DP the runner
passes no loss and no token count (they are private), and the speed and time left,
timings of the private records, are left out too.
"""

from __future__ import annotations

import math
import time
from typing import Callable

from .term import Level, err, line, warn

Callback = Callable[[str, int, int, float, int], None]


def _clock(seconds: float) -> str:
    s = int(max(seconds, 0))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _rate(tokens_per_s: float) -> str:
    return f"{tokens_per_s / 1000:.1f}k" if tokens_per_s >= 1000 else f"{tokens_per_s:.0f}"


class LineLog:
    """Plain progress lines on stderr (``warn``: silent under -q)."""

    def __init__(self, every: float = 30.0, now: Callable[[], float] = time.monotonic) -> None:
        self.every, self.now = every, now
        self.started: dict[str, float] = {}
        self.first: dict[str, tuple[int, int, float]] = {}  # stage -> (done, tokens, time) at its first step
        self.last_line = 0.0

    def __call__(self, stage: str, done: int, total: int, loss: float, tokens: int = -1) -> None:
        t = self.now()
        if stage == "resumed":  # before any step: a checkpoint was restored
            return warn(f"training: resumed from step {done} of {total}")
        if stage != "training":
            return self._stage(stage, done, total, t)
        if stage not in self.first:
            self.first[stage] = (done, max(tokens, 0), t)
            self.last_line = t
            return warn(f"training: step {done}/{total}" + self._loss(loss))
        tenth = max(total // 10, 1)
        if done == total or done % tenth == 0 or t - self.last_line >= self.every:
            self.last_line = t
            warn(f"training: step {done}/{total}" + self._speed(stage, done, total, tokens, t) + self._loss(loss))

    def _stage(self, stage: str, done: int, total: int, t: float) -> None:
        if done == 0:
            self.started[stage] = t
            warn(f"{stage} ...")
        elif done >= total:
            warn(f"{stage}: done in {t - self.started.pop(stage, t):.1f} s")

    def _speed(self, stage: str, done: int, total: int, tokens: int, t: float) -> str:
        d0, k0, t0 = self.first[stage]
        if tokens < 0 or t <= t0 or done <= d0:  # a private (DP) round: its timings are private too
            return ""
        steps_per_s = (done - d0) / (t - t0)
        speed = f", {_rate((tokens - k0) / (t - t0))} tokens/s" if tokens >= 0 else ""
        return f"{speed}, eta {_clock((total - done) / steps_per_s)}"

    @staticmethod
    def _loss(loss: float) -> str:
        return "" if math.isnan(loss) else f", loss {loss:.4f}"


def _bar():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=err._rich(), transient=False)
    tasks: dict[str, int] = {}

    def progress(stage: str, done: int, total: int, loss: float, tokens: int = -1) -> None:
        if stage == "resumed":
            return bar.console.print(f"training: resumed from step {done} of {total}")
        info = "" if math.isnan(loss) else f"loss {loss:.4f}"
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total, info=info)
        bar.update(tasks[stage], completed=done, info=info)

    return bar, progress


def for_round(*, terminal: bool, json_out: bool):
    """(a context manager or None, the progress callback) for this run's stderr."""
    if Level.quiet:
        return None, lambda *a, **k: None
    if terminal and not json_out:
        return _bar()
    return None, LineLog()


def notes(bar):
    """The round's lines for the operator (the DP plan's verdict): above the bar on a terminal."""
    def note(text: str, warning: bool) -> None:
        text = f"warning: {text}" if warning else text
        if bar is not None:
            bar.console.print(line(text), highlight=False)
        else:
            warn(text)

    return note
