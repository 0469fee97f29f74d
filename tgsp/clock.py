"""Timestamps: one strict UTC format, and an injectable clock."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Callable

from .errors import FormatError, InputError

FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_SHAPE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z\Z")
Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def fmt(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime(FORMAT)


def parse(text: object, *, what: str = "timestamp") -> datetime:
    """Parse ``YYYY-MM-DDTHH:MM:SSZ`` exactly (what TGSP writes)."""
    if not isinstance(text, str):
        raise FormatError(f"{what} must be a string like 2026-01-31T12:00:00Z")
    shape = _SHAPE.match(text)  # not strptime: loading _strptime costs every command start-up
    try:
        if shape is None:
            raise ValueError(text)
        moment = datetime(*(int(g) for g in shape.groups()), tzinfo=timezone.utc)
    except ValueError:
        raise FormatError(f"{what} {text!r} is not of the form 2026-01-31T12:00:00Z") from None
    if fmt(moment) != text:
        raise FormatError(f"{what} {text!r} is not canonical")
    return moment


def parse_user(text: str, *, what: str = "time") -> datetime:
    """Accept any ISO 8601 time from a user; naive times are taken as UTC."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"{what} {text!r} is not an ISO 8601 time", hint="use e.g. 2027-01-31T00:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).replace(microsecond=0)
