"""The round's plain progress lines (a CronJob's log), with a fake clock."""

from __future__ import annotations

import math

from tgflow_cli import roundlog
from tgflow_cli.term import Level


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_lines_per_stage_per_tenth_and_per_interval(capsys):
    clock = Clock()
    log = roundlog.LineLog(every=30.0, now=clock)
    log("scoring novelty", 0, 1, math.nan)
    clock.t += 2.5
    log("scoring novelty", 1, 1, math.nan)
    for step in range(1, 101):
        clock.t += 1.0 if step != 33 else 40.0  # one slow step: a line on time, not only per tenth
        log("training", step, 100, 0.5, step * 1000)
    err = capsys.readouterr().err.splitlines()
    assert err[:2] == ["scoring novelty ...", "scoring novelty: done in 2.5 s"]
    steps = [line.split(",")[0] for line in err[2:]]
    assert steps == ["training: step 1/100"] + [f"training: step {n}/100" for n in (10, 20, 30, 33, 40, 50, 60, 70,
                                                                                        80, 90, 100)]
    assert err[3] == "training: step 10/100, 1.0k tokens/s, eta 1:30, loss 0.5000"


def test_a_resumed_round_and_a_private_one(capsys):
    clock = Clock()
    log = roundlog.LineLog(now=clock)
    log("resumed", 25, 40, math.nan, -1)
    for step in range(26, 41):  # a DP round: no loss, no token count, so no speed and no time left either
        clock.t += 1.0
        log("training", step, 40, math.nan, -1)
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "training: resumed from step 25 of 40"
    assert err[1:] == ["training: step 26/40", "training: step 28/40", "training: step 32/40", "training: step 36/40",
                       "training: step 40/40"]


def test_a_fresh_private_round_is_not_called_resumed(capsys):
    log = roundlog.LineLog(now=Clock())
    log("training", 1, 20, math.nan, -1)  # the first DP step: NaN loss is no sign of a checkpoint
    assert capsys.readouterr().err.splitlines() == ["training: step 1/20"]


def test_quiet_prints_nothing(capsys):
    Level.quiet = True
    try:
        _, progress = roundlog.for_round(terminal=False, json_out=False)
        progress("training", 1, 10, 0.3, 100)
    finally:
        Level.quiet = False
    assert capsys.readouterr().err == ""
