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
from rich.table import Table
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
    """-q and -v: how much people-facing output there is (errors always print); -o wide."""

    quiet = False
    verbose = 0
    wide = False


def wide() -> bool:
    """Full values (key ids, package ids) instead of short ones: with -o wide, or when stdout is
    not a terminal (a script reads it: two keys must never look alike)."""
    return Level.wide or not out.is_terminal


def say(*parts: Any) -> None:
    if not Level.quiet:
        out.print(line(*parts))


def show(renderable: Any) -> None:
    """A table (its cells built with ``cells``), unless -q. Not on a terminal: plain columns,
    full values, no box art and no truncation at 80 columns."""
    if Level.quiet:
        return
    if out.is_terminal or not isinstance(renderable, Table):
        out.print(renderable)
        return
    for row in plain_rows(renderable):
        out.file.write(row + "\n")
    out.file.flush()


def plain_rows(table: Table) -> list[str]:
    """The table as space-aligned rows (as kubectl prints), each cell one cleaned line."""
    cols = [[clean(c.header if isinstance(c.header, str) else getattr(c.header, "plain", c.header)).upper()]
            + [clean(getattr(cell, "plain", cell)) or "-" for cell in c._cells] for c in table.columns]
    widths = [max(len(v) for v in col) for col in cols]
    return ["   ".join(col[i].ljust(w) for col, w in zip(cols, widths)).rstrip() for i in range(len(cols[0]))]


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
