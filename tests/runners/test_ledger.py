"""The route privacy ledger: write-ahead charges, settling, and a parser that fails closed."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from runners.privacy.accounting import DpEvent, epsilon
from runners.privacy.ledger import FILENAME, FORMAT, Ledger
from tgsp.errors import InputError, OutputError


def test_charge_before_training_then_settle(tmp_path):
    ledger = Ledger.load(tmp_path, "r")
    assert ledger.entries == [] and ledger.spent(1e-5, "prv") == 0.0
    ledger.begin("round-1", DpEvent(1.0, 0.1, 50), {"delta": 1e-5})
    # The charge is on disk before any step runs: a fresh reader sees all 50 steps.
    again = Ledger.load(tmp_path, "r")
    assert again.events() == [DpEvent(1.0, 0.1, 50)] and again.pending("round-1")["status"] == "pending"
    # Resuming the same round keeps the same entry: no double charge.
    again.begin("round-1", DpEvent(1.0, 0.1, 50), {"delta": 1e-5})
    assert len(Ledger.load(tmp_path, "r").entries) == 1
    again.settle("round-1", {"outcome": "rejected-eval-gate"}, steps=30)
    final = Ledger.load(tmp_path, "r")
    assert final.events() == [DpEvent(1.0, 0.1, 30)]
    assert final.entries[0]["status"] == "settled" and final.entries[0]["outcome"] == "rejected-eval-gate"
    assert final.spent(1e-5, "prv") == pytest.approx(epsilon([DpEvent(1.0, 0.1, 30)], 1e-5))
    final.refuse("round-2", {"outcome": "privacy-budget-exhausted"})
    assert Ledger.load(tmp_path, "r").events() == [DpEvent(1.0, 0.1, 30)]  # a refusal charges nothing


def test_another_routes_ledger_is_refused(tmp_path):
    Ledger.load(tmp_path, "a").refuse("x", {})
    with pytest.raises(InputError, match="unreadable"):
        Ledger.load(tmp_path, "b")


@pytest.mark.parametrize("event", [
    {"noise_multiplier": 1.0, "sample_rate": 0.1, "steps": -5},  # a negative charge would refund budget
    {"noise_multiplier": 0.0, "sample_rate": 0.1, "steps": 5},
    {"noise_multiplier": 1.0, "sample_rate": 1.5, "steps": 5},
    {"noise_multiplier": "NaN", "sample_rate": 0.1, "steps": 5},
    {"noise_multiplier": 1.0, "sample_rate": 0.1, "steps": 2.5},
    {"noise_multiplier": 1.0, "sample_rate": 0.1},
])
def test_invalid_events_fail_closed(tmp_path, event):
    doc = {"format": FORMAT, "route": "r", "entries": [{"round_id": "x", "status": "settled", "events": [event]}]}
    (tmp_path / FILENAME).write_text(json.dumps(doc))
    with pytest.raises(InputError, match="unreadable"):
        Ledger.load(tmp_path, "r")


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                     lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                     max_leaves=20)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.lists(st.fixed_dictionaries({"round_id": _json, "status": st.sampled_from(["pending", "settled", "refused", "x"]),
                                               "events": _json}), max_size=3) | _json,
       raw=st.binary(max_size=64))
def test_the_parser_returns_a_ledger_or_a_clean_error(tmp_path, entries, raw):
    for content in (json.dumps({"format": FORMAT, "route": "r", "entries": entries}).encode(), raw):
        (tmp_path / FILENAME).write_bytes(content)
        try:
            ledger = Ledger.load(tmp_path, "r")
        except InputError:
            continue
        # Whatever loads is usable: every event is valid and the spend computes.
        assert all(e.sigma > 0 and 0 < e.q <= 1 and e.steps >= 0 for e in ledger.events())


def test_a_crash_while_writing_leaves_the_previous_ledger(tmp_path, monkeypatch):
    """Power loss between write and rename: the old ledger stays whole, and the
    round that was being settled still counts at its full pending charge."""
    import os

    ledger = Ledger.load(tmp_path, "r")
    ledger.begin("round-1", DpEvent(1.0, 0.1, 50), {})
    before = (tmp_path / FILENAME).read_bytes()

    def crash(*args, **kwargs):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OutputError, match="simulated crash"):
        ledger.settle("round-1", {"outcome": "packaged"}, steps=10)
    monkeypatch.undo()
    assert (tmp_path / FILENAME).read_bytes() == before
    survivor = Ledger.load(tmp_path, "r")
    assert survivor.events() == [DpEvent(1.0, 0.1, 50)] and survivor.pending("round-1") is not None
    assert [p.name for p in tmp_path.iterdir()] == [FILENAME]  # no stray temporary file either
