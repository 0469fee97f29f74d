"""Cron: one input form, three dialects, refusals for what cannot be said."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from runners.export import cron
from tgsp.errors import InputError


@pytest.mark.parametrize("text,unix,aws,quartz", [
    ("0 3 * * *", "0 3 * * *", "cron(0 3 * * ? *)", "0 0 3 * * ?"),
    ("*/15 * * * *", "*/15 * * * *", "cron(*/15 * * * ? *)", "0 */15 * * * ?"),
    ("30 2 * * MON-FRI", "30 2 * * 1-5", "cron(30 2 ? * 2-6 *)", "0 30 2 ? * 2-6"),
    ("0 0 1 JAN *", "0 0 1 1 *", "cron(0 0 1 1 ? *)", "0 0 0 1 1 ?"),
    ("0 12 * * 0", "0 12 * * 0", "cron(0 12 ? * 1 *)", "0 0 12 ? * 1"),
    ("0 12 * * 7", "0 12 * * 7", "cron(0 12 ? * 1 *)", "0 0 12 ? * 1"),
    ("0 12 * * 5-7", "0 12 * * 5-7", "cron(0 12 ? * 1,6,7 *)", "0 0 12 ? * 1,6,7"),
    ("5 4 1,15 * *", "5 4 1,15 * *", "cron(5 4 1,15 * ? *)", "0 5 4 1,15 * ?"),
])
def test_translations(text, unix, aws, quartz):
    c = cron.parse(text)
    assert (cron.to_unix(c), cron.to_aws(c), cron.to_quartz(c)) == (unix, aws, quartz)


@pytest.mark.parametrize("text,needle", [
    ("0 3 * *", "5 fields"), ("61 * * * *", "minute"), ("0 24 * * *", "hour"), ("0 0 0 * *", "day-of-month"),
    ("0 0 * 13 *", "month"), ("0 0 * * 8", "day-of-week"), ("*/0 * * * *", "zero step"), ("0 0 * * FUNDAY", "not valid"),
    ("5-1 * * * *", "outside"),
])
def test_invalid_schedules(text, needle):
    with pytest.raises(InputError, match=needle):
        cron.parse(text)


def test_both_day_fields_cannot_be_expressed_for_aws_or_quartz():
    c = cron.parse("0 0 1 * MON")
    assert cron.to_unix(c) == "0 0 1 * 1"
    for fn in (cron.to_aws, cron.to_quartz):
        with pytest.raises(InputError, match="both day-of-month and day-of-week"):
            fn(c)


field = lambda lo, hi: st.one_of(st.just("*"), st.integers(lo, hi).map(str),  # noqa: E731
                                 st.integers(1, 9).map(lambda n: f"*/{n}"),
                                 st.tuples(st.integers(lo, hi), st.integers(lo, hi)).map(lambda t: f"{min(t)}-{max(t)}"))


@given(field(0, 59), field(0, 23), field(1, 31), field(1, 12), field(0, 6))
def test_every_valid_schedule_translates_or_is_refused_clearly(m, h, dom, mon, dow):
    c = cron.parse(f"{m} {h} {dom} {mon} {dow}")
    assert cron.to_unix(c).split() == [m, h, dom, mon, dow]
    if dom != "*" and dow != "*":
        with pytest.raises(InputError):
            cron.to_aws(c)
        return
    aws = cron.to_aws(c)[5:-1].split()
    quartz = cron.to_quartz(c).split()
    assert len(aws) == 6 and aws.count("?") == 1 and len(quartz) == 6 and quartz.count("?") == 1
    assert aws[:2] == [m, h] and quartz[1:3] == [m, h]
