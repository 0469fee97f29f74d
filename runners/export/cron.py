"""Schedules: one documented input form, translated to each platform's dialect.

Input: standard 5-field unix cron, ``minute hour day-of-month month day-of-week``.
Each field is ``*``, a number, a range ``a-b``, a step ``*/n`` or ``a-b/n``, or a
comma list of those. Months may be JAN-DEC and weekdays SUN-SAT (0 or 7 = Sunday).

Dialects:
  unix   Kubernetes CronJob, Cloud Scheduler, Azure ML: the same 5 fields.
  aws    EventBridge Scheduler: ``cron(min hour dom mon dow year)``, weekdays 1-7 =
         SUN-SAT, and one of day-of-month / day-of-week must be ``?``.
  quartz Databricks: ``sec min hour dom mon dow``, weekdays 1-7 = SUN-SAT, one of
         day-of-month / day-of-week must be ``?``.
Unix cron runs when *either* restricted day field matches; AWS and Quartz cannot
say that, so a schedule restricting both is refused for them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tgsp.errors import InputError

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day-of-month", 1, 31), ("month", 1, 12), ("day-of-week", 0, 7))
_MONTHS = {m: i for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split(), 1)}
_DAYS = {d: i for i, d in enumerate("SUN MON TUE WED THU FRI SAT".split())}
_ITEM = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?$")


@dataclass(frozen=True)
class Cron:
    fields: tuple[str, str, str, str, str]  # normalised: names replaced by numbers

    @property
    def restricts_dom(self) -> bool:
        return self.fields[2] != "*"

    @property
    def restricts_dow(self) -> bool:
        return self.fields[4] != "*"


def parse(text: str) -> Cron:
    parts = text.split()
    if len(parts) != 5:
        raise InputError(f"schedule {text!r} must have 5 fields (minute hour day-of-month month day-of-week)",
                         hint="e.g. --schedule '0 3 * * *' for every day at 03:00")
    out = []
    for part, (name, lo, hi) in zip(parts, _FIELDS):
        names = _MONTHS if name == "month" else _DAYS if name == "day-of-week" else {}
        norm = re.sub(r"[A-Za-z]{3}", lambda m: str(names[m.group(0).upper()]) if m.group(0).upper() in names
                      else m.group(0), part)
        for item in norm.split(","):
            m = _ITEM.match(item)
            if not m:
                raise InputError(f"schedule field {name} {part!r} is not valid cron")
            base, step = m.group(1), m.group(3)
            if step and int(step[1:]) == 0:
                raise InputError(f"schedule field {name} {part!r} has a zero step")
            if base != "*":
                nums = [int(n) for n in base.split("-")]
                if any(not lo <= n <= hi for n in nums) or (len(nums) == 2 and nums[0] > nums[1]):
                    raise InputError(f"schedule field {name} {part!r} is outside {lo}-{hi}")
        out.append(norm)
    return Cron(tuple(out))


def _shift_dow(field: str) -> str:
    """Unix weekdays (0-7, 0 and 7 = Sunday) to AWS/Quartz weekdays (1-7 = SUN-SAT).

    The field is expanded to its set of days first, so ranges that touch
    Sunday at either end (``0-7``, ``5-7``, ``0-2``) and steps keep their
    meaning; a set covering the whole week is ``*``."""
    days: set[int] = set()
    for item in field.split(","):
        base, _, step = item.partition("/")
        nums = [0, 6] if base == "*" else [int(n) for n in base.split("-")]
        lo, hi = nums[0], nums[-1]
        days.update(d % 7 for d in range(lo, hi + 1, int(step or 1)))
    if days == set(range(7)):
        return "*"
    runs: list[list[int]] = []
    for d in sorted(x + 1 for x in days):
        if runs and d == runs[-1][-1] + 1:
            runs[-1].append(d)
        else:
            runs.append([d])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 2 else ",".join(map(str, r)) for r in runs)


def _day_fields(cron: Cron, dialect: str) -> tuple[str, str]:
    dom, dow = cron.fields[2], cron.fields[4]
    if cron.restricts_dom and cron.restricts_dow:
        raise InputError(f"{dialect} schedules cannot restrict both day-of-month and day-of-week",
                         hint="use '*' in one of them")
    if cron.restricts_dow:
        return "?", _shift_dow(dow)
    return dom, "?"


def to_unix(cron: Cron) -> str:
    return " ".join(cron.fields)


def to_aws(cron: Cron) -> str:
    dom, dow = _day_fields(cron, "AWS")
    m, h, _, mon, _ = cron.fields
    return f"cron({m} {h} {dom} {mon} {dow} *)"


def to_quartz(cron: Cron) -> str:
    dom, dow = _day_fields(cron, "Quartz")
    m, h, _, mon, _ = cron.fields
    return f"0 {m} {h} {dom} {mon} {dow}"
