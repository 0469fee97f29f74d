"""Terminal output that never interprets data.

Everything printed for people goes through ``say``/``warn``: the consoles
have markup, emoji and highlighting off, so a signer named ``[/x]`` is just
text, and every string is passed through ``clean`` first, so an ANSI escape
or a bidi override in a package field cannot paint the screen. Styling is
added only by code, with ``styled``. JSON output is separate and exact.

rich is loaded only when output goes to a terminal (or a variable forces one): text for a
pipe is written plain, as rich would write it, so `tgsp verify` in CI never pays for rich.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text



class _Console:
    """A rich Console, made on first use."""

    def __init__(self, stderr: bool) -> None:
        self._stderr, self._made = stderr, None

    def _rich(self):
        if self._made is None:
            from rich.console import Console

            self._made = Console(stderr=self._stderr, soft_wrap=True, highlight=False, markup=False, emoji=False)
        return self._made

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rich(), name)

    @property
    def stream(self):
        return sys.stderr if self._stderr else sys.stdout

    def plain(self) -> bool:
        """Whether rich would write no styles here: rich's own rule (TTY_COMPATIBLE, FORCE_COLOR, isatty)."""
        if self._made is not None:
            return not self._made.is_terminal
        compatible = os.environ.get("TTY_COMPATIBLE", "")
        if compatible in ("0", "1"):
            return compatible == "0"
        force = os.environ.get("FORCE_COLOR")
        if force is not None:
            return force == ""
        try:
            return not self.stream.isatty()
        except (AttributeError, ValueError, OSError):
            return True

    def emit(self, parts: tuple) -> None:
        if not self.plain():
            self._rich().print(line(*parts))
            return
        _write(self.stream, plain_text(*parts) + "\n")


out = _Console(stderr=False)
err = _Console(stderr=True)


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


def plain_text(*parts: Any) -> str:
    """What ``line`` shows, without its styles."""
    return "".join(clean(p.text) if isinstance(p, styled) else clean(p) for p in parts)


def line(*parts: Any) -> Text:
    """One Text from data parts (cleaned) and ``styled`` parts (code's own)."""
    from rich.text import Text

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
    return Level.wide or out.plain()


def say(*parts: Any) -> None:
    if not Level.quiet:
        out.emit(parts)


def show(renderable: Any) -> None:
    """A table (its cells built with ``cells``), unless -q. Not on a terminal: plain columns,
    full values, no box art and no truncation at 80 columns."""
    from rich.table import Table

    if Level.quiet:
        return
    if not out.plain() or not isinstance(renderable, Table):
        out.print(renderable)
        return
    _write_rows(plain_rows(renderable))


def show_rows(headers: list[str], rows: list[list[Any]]) -> None:
    """A table from plain rows (data and ``styled`` parts): rich only on a terminal."""
    if Level.quiet:
        return
    if not out.plain():
        from rich.table import Table

        table = Table(*headers, show_header=True)
        for row in rows:
            table.add_row(*cells(*(line(v) if isinstance(v, styled) else v for v in row)))
        out.print(table)
        return
    _write_rows(_aligned([[h.upper()] + [plain_text(r[i]) or "-" for r in rows] for i, h in enumerate(headers)]))


def _write_rows(rows: list[str]) -> None:
    _write(out.stream, "".join(row + "\n" for row in rows))


def _write(stream, text: str) -> None:
    """Write and flush; a reader that went away (`| head`) ends the command quietly with 1, as rich does."""
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, stream.fileno())
        except (AttributeError, OSError, ValueError):
            pass
        raise SystemExit(1) from None


def plain_rows(table: Table) -> list[str]:
    """The table as space-aligned rows (as kubectl prints), each cell one cleaned line."""
    return _aligned([[clean(c.header if isinstance(c.header, str) else getattr(c.header, "plain", c.header)).upper()]
                     + [clean(getattr(cell, "plain", cell)) or "-" for cell in c._cells] for c in table.columns])


def _aligned(cols: list[list[str]]) -> list[str]:
    widths = [max(len(v) for v in col) for col in cols]
    return ["   ".join(col[i].ljust(w) for col, w in zip(cols, widths)).rstrip() for i in range(len(cols[0]))]


def warn(*parts: Any) -> None:
    if not Level.quiet:
        err.emit(parts)


def detail(*parts: Any) -> None:
    """Printed only with -v."""
    if Level.verbose and not Level.quiet:
        err.emit(parts)


def error(*parts: Any) -> None:
    err.emit(parts)


def cells(*values: Any) -> list[Text]:
    """Table cells from data (cleaned, never markup)."""
    from rich.text import Text

    return [v if isinstance(v, Text) else line(v) for v in values]
