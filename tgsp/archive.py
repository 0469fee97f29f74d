"""The TGSP container: a strict, canonical subset of POSIX ustar.

Writing: regular files only, mode 0644, uid/gid 0, mtime 0, empty owner
names, no trailing record padding. Sizes of 8 GiB and more use the GNU
base-256 size encoding. Any tar tool can list the result.

Reading: every header is rebuilt from its parsed (name, size) and must match
byte for byte; padding must be zeros; the archive ends with exactly two zero
blocks and then end of file. Links, devices, directories, pax and GNU
extension headers, unsafe names and oversized entries are rejected before a
byte of their data is used. So a changed byte anywhere is caught.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO, Iterator

from .atomic import write_all
from .errors import FormatError, LimitError, UnsafeEntryError
from .paths import check_relpath

BLOCK = 512
_OCTAL_MAX = 8**11 - 1
_TYPES = {
    b"1": "a hard link", b"2": "a symbolic link", b"3": "a character device", b"4": "a block device",
    b"5": "a directory", b"6": "a FIFO", b"7": "a contiguous file", b"x": "a pax extended header",
    b"g": "a pax global header", b"L": "a GNU long-name record", b"K": "a GNU long-link record",
    b"S": "a GNU sparse file",
}


def _split_name(name: bytes) -> tuple[bytes, bytes]:
    if len(name) <= 100:
        return b"", name
    # Shortest prefix whose remainder fits: one deterministic choice.
    for i, ch in enumerate(name):
        if ch == 0x2F and i <= 155 and len(name) - i - 1 <= 100 and i > 0:
            return name[:i], name[i + 1 :]
    raise UnsafeEntryError(f"entry name {name[:60]!r}... cannot be stored in a ustar header")


def _size_field(size: int) -> bytes:
    if size <= _OCTAL_MAX:
        return b"%011o\0" % size
    return b"\x80" + size.to_bytes(11, "big")


def header(name: str, size: int) -> bytes:
    prefix, short = _split_name(name.encode("utf-8"))
    block = bytearray(BLOCK)
    block[0:100] = short.ljust(100, b"\0")
    block[100:108] = b"0000644\0"
    block[108:116] = b"0000000\0"
    block[116:124] = b"0000000\0"
    block[124:136] = _size_field(size)
    block[136:148] = b"00000000000\0"
    block[148:156] = b" " * 8
    block[156:157] = b"0"
    block[257:263] = b"ustar\0"
    block[263:265] = b"00"
    block[329:337] = b"0000000\0"
    block[337:345] = b"0000000\0"
    block[345:500] = prefix.ljust(155, b"\0")
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def padding(size: int) -> int:
    return -size % BLOCK


TRAILER = bytes(2 * BLOCK)
_COMPRESSED = ((b"\x1f\x8b", "gzip"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"), (b"BZh", "bzip2"))


@dataclass(frozen=True)
class Entry:
    name: str
    size: int
    header_offset: int
    data_offset: int

    @property
    def end(self) -> int:
        return self.data_offset + self.size + padding(self.size)


def _parse_header(block: bytes, index: int) -> tuple[str, int]:
    if block[257:263] != b"ustar\0":
        raise FormatError("not a TGSP package: entry %d has no ustar header" % index)
    kind = block[156:157]
    raw_name = block[345:500].rstrip(b"\0") + b"/" + block[0:100].rstrip(b"\0")
    raw_name = raw_name.lstrip(b"/")
    try:
        name = raw_name.decode("utf-8")
    except UnicodeDecodeError:
        raise UnsafeEntryError("entry %d has a name that is not UTF-8" % index) from None
    if kind in _TYPES:
        raise UnsafeEntryError(f"entry {name[:80]!r} is {_TYPES[kind]}; only regular files are allowed")
    if kind != b"0":
        raise UnsafeEntryError(f"entry {name[:80]!r} has unsupported type {kind!r}")
    check_relpath(name, what="entry name")
    field = block[124:136]
    if field[0] == 0x80:
        size = int.from_bytes(field[1:], "big")
    else:
        try:
            size = int(field[:11], 8) if field[11:12] == b"\0" else -1
        except ValueError:
            size = -1
    if size < 0:
        raise FormatError(f"entry {name[:80]!r} has a malformed size field")
    if header(name, size) != block:
        raise FormatError(f"entry {name[:80]!r} has a non-canonical tar header")
    return name, size


def _read_exact(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise FormatError("package is truncated")
    return data


def index(f: BinaryIO, *, max_entries: int, max_entry_size: int, file_size: int) -> list[Entry]:
    """Walk every header (seeking over data) and check the archive's shape."""
    entries: list[Entry] = []
    pos = 0
    f.seek(0)
    magic = f.read(6)
    for sig, kind in _COMPRESSED:
        if magic.startswith(sig):
            raise FormatError(f"this is a {kind} file; compressed archives are not TGSP packages")
    f.seek(0)
    while True:
        block = _read_exact(f, BLOCK)
        if block == bytes(BLOCK):
            if _read_exact(f, BLOCK) != bytes(BLOCK):
                raise FormatError("archive end marker is damaged")
            if f.read(1):
                raise FormatError("package has bytes after the end of the archive")
            return entries
        if len(entries) >= max_entries:
            raise LimitError(f"package has more than {max_entries} entries")
        name, size = _parse_header(block, len(entries))
        if size > max_entry_size:
            raise LimitError(f"entry {name!r} is {size} bytes, over the {max_entry_size}-byte limit")
        entry = Entry(name, size, pos, pos + BLOCK)
        if entry.end > file_size:
            raise FormatError("package is truncated")
        pad = padding(size)
        if pad:
            f.seek(entry.data_offset + size)
            if _read_exact(f, pad) != bytes(pad):
                raise FormatError(f"entry {name!r} has non-zero padding")
        entries.append(entry)
        pos = entry.end
        f.seek(pos)


def read_entry(f: BinaryIO, entry: Entry) -> bytes:
    f.seek(entry.data_offset)
    return _read_exact(f, entry.size)


def iter_entry(f: BinaryIO, entry: Entry, buf: bytearray) -> Iterator[memoryview]:
    """Yield the entry's bytes through one reusable buffer (constant memory)."""
    f.seek(entry.data_offset)
    view = memoryview(buf)
    left = entry.size
    while left:
        n = f.readinto(view[: min(len(buf), left)])
        if not n:
            raise FormatError("package is truncated")
        left -= n
        yield view[:n]


class Writer:
    """Writes entries in order; the caller supplies each entry's exact size."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self._left = 0
        self._size = 0

    def begin(self, name: str, size: int) -> None:
        if self._left:
            raise RuntimeError("previous entry not finished")
        write_all(self.f, header(check_relpath(name, what="entry name"), size))
        self._left, self._size = size, size

    def write(self, data) -> None:
        if len(data) > self._left:
            raise RuntimeError("entry data longer than declared")
        write_all(self.f, data)
        self._left -= len(data)

    def end(self) -> None:
        if self._left:
            raise RuntimeError("entry data shorter than declared")
        write_all(self.f, bytes(padding(self._size)))

    def add(self, name: str, data: bytes) -> None:
        self.begin(name, len(data))
        self.write(data)
        self.end()

    def close(self) -> None:
        write_all(self.f, TRAILER)
