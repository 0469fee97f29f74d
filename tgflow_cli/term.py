"""Terminal output that never interprets data.

Everything printed for people goes through ``say``/``warn``: the consoles
have markup, emoji and highlighting off, so a signer named ``[/x]`` is just
text, and every string is passed through ``clean`` first, so an ANSI escape
or a bidi override in a package field cannot paint the screen. Styling is
added only by code, with ``styled``. JSON output is separate and exact.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.text import Text

out = Console(soft_wrap=True, highlight=False, markup=False, emoji=False)
err = Console(stderr=True, soft_wrap=True, highlight=False, markup=False, emoji=False)

def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(value: Any) -> str:
    """``value`` as one line of inert text. Every character Python calls
    unprintable becomes a visible escape: C0/C1 controls (newlines too), DEL,
    format characters such as the bidi overrides of Trojan Source
    (CVE-2021-42574), separators other than the space, and surrogates."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


class styled:  # noqa: N801 - reads like markup at the call sites
    """A piece of code-chosen text with a rich style (never data)."""

    __slots__ = ("text", "style")

    def __init__(self, text: str, style: str) -> None:
        self.text, self.style = text, style


def line(*parts: Any) -> Text:
    """One Text from data parts (cleaned) and ``styled`` parts (code's own)."""
    t = Text()
    for p in parts:
        if isinstance(p, styled):
            t.append(clean(p.text), style=p.style)
        else:
            t.append(clean(p))
    return t


class Level:
    """-q and -v: how much people-facing output there is (errors always print)."""

    quiet = False
    verbose = 0


def say(*parts: Any) -> None:
    if not Level.quiet:
        out.print(line(*parts))


def show(renderable: Any) -> None:
    """A table (its cells built with ``cells``), unless -q."""
    if not Level.quiet:
        out.print(renderable)


def warn(*parts: Any) -> None:
    if not Level.quiet:
        err.print(line(*parts))


def detail(*parts: Any) -> None:
    """Printed only with -v."""
    if Level.verbose and not Level.quiet:
        err.print(line(*parts))


def error(*parts: Any) -> None:
    err.print(line(*parts))


def cells(*values: Any) -> list[Text]:
    """Table cells from data (cleaned, never markup)."""
    return [v if isinstance(v, Text) else line(v) for v in values]
