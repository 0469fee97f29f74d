"""Malicious archives and the parsers: reject, never crash, never write outside."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest
from hypothesis import given, settings, strategies as st

import tgsp
from tgsp import archive, canonical, evidence, manifest as mf
from tgsp.errors import FormatError, TgflowError, UnsafeEntryError
from tgsp.paths import check_relpath

from tests.helpers import assemble


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for info, data in members:
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _info(name: str, kind=tarfile.REGTYPE, size=0, **kw) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, size
    for k, v in kw.items():
        setattr(info, k, v)
    return info


MALICIOUS = {
    "absolute path": [(_info("/etc/passwd", size=1), b"x")],
    "dot-dot": [(_info("payload/../../evil", size=1), b"x")],
    "symlink": [(_info("payload/link", tarfile.SYMTYPE, linkname="/etc/shadow"), None)],
    "hard link": [(_info("payload/hard", tarfile.LNKTYPE, linkname="envelope.json"), None)],
    "char device": [(_info("payload/tty", tarfile.CHRTYPE, devmajor=4, devminor=0), None)],
    "block device": [(_info("payload/sda", tarfile.BLKTYPE, devmajor=8, devminor=0), None)],
    "fifo": [(_info("payload/pipe", tarfile.FIFOTYPE), None)],
    "directory": [(_info("payload/dir", tarfile.DIRTYPE), None)],
    "backslash": [(_info("payload\\..\\evil", size=1), b"x")],
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_archives_are_rejected_and_nothing_is_written(case, tmp_path, world):
    bad = tmp_path / "bad.tgsp"
    bad.write_bytes(_tar(MALICIOUS[case]))
    before = set(tmp_path.rglob("*"))
    report = tgsp.verify(bad, world.policy())
    assert not report.ok and report.first_failure.name == "format"
    with pytest.raises(TgflowError):
        tgsp.unpack(bad, tmp_path / "out", world.policy())
    assert set(tmp_path.rglob("*")) == before  # nothing created, inside or out
    assert not (tmp_path.parent / "evil").exists()


def test_pax_and_gnu_extension_headers_are_rejected(world):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        info = _info("payload/" + "é" * 10, size=1)
        t.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(UnsafeEntryError, match="pax"):
        archive.index(io.BytesIO(buf.getvalue()), max_entries=10, max_entry_size=10, file_size=len(buf.getvalue()))


def test_compressed_archive_is_rejected_clearly():
    data = gzip.compress(_tar([(_info("a", size=1), b"x")]))
    with pytest.raises(FormatError, match="gzip"):
        archive.index(io.BytesIO(data), max_entries=10, max_entry_size=10, file_size=len(data))


def test_oversized_entry_and_too_many_entries_are_rejected():
    data = assemble([("payload/big", bytes(4096))])
    with pytest.raises(tgsp.errors.LimitError, match="over the"):
        archive.index(io.BytesIO(data), max_entries=10, max_entry_size=1024, file_size=len(data))
    many = assemble([(f"payload/f{i}", b"") for i in range(20)])
    with pytest.raises(tgsp.errors.LimitError, match="more than"):
        archive.index(io.BytesIO(many), max_entries=5, max_entry_size=10, file_size=len(many))


def test_size_field_claiming_more_than_the_file_is_truncation():
    data = bytearray(assemble([("payload/a", b"x")]))
    header = archive.header("payload/a", 1 << 40)
    data[:512] = header
    with pytest.raises(FormatError, match="truncated"):
        archive.index(io.BytesIO(bytes(data)), max_entries=10, max_entry_size=1 << 41, file_size=len(data))


def test_header_is_canonical_and_readable_by_tarfile():
    name = "payload/" + "/".join(["d" * 40] * 4)  # long: uses the ustar prefix field
    data = assemble([(name, b"hello")])
    entries = archive.index(io.BytesIO(data), max_entries=10, max_entry_size=100, file_size=len(data))
    assert [(e.name, e.size) for e in entries] == [(name, 5)]
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        assert t.getnames() == [name] and t.extractfile(name).read() == b"hello"


def test_huge_sizes_use_base256_and_round_trip():
    h = archive.header("payload/x", 10 << 30)
    assert h[124] == 0x80
    assert archive._parse_header(h, 0) == ("payload/x", 10 << 30)


@pytest.mark.parametrize("path", ["", "/abs", "a/../b", "a//b", "./a", "a/.", "con:x", "a\\b", "a\x00b", "e\u0301"])
def test_unsafe_relative_paths(path):
    with pytest.raises(UnsafeEntryError):
        check_relpath(path)


# --- parsers never crash on arbitrary input ----------------------------------
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_archive_index_rejects_garbage_cleanly(data):
    try:
        archive.index(io.BytesIO(data), max_entries=50, max_entry_size=1 << 20, file_size=len(data))
    except TgflowError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_verify_of_garbage_reports_format_failure(data):
    report = tgsp.verify(io.BytesIO(data), tgsp.TrustPolicy())
    assert not report.ok and report.checks[0].name == "format"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=500))
def test_canonical_parse_raises_only_format_errors(data):
    try:
        canonical.parse(data, canonical=True)
    except FormatError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_manifest_validation_raises_only_format_errors(value):
    try:
        mf.validate(value)
    except FormatError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(mf.KNOWN) + ["x"]), json_values, max_size=12))
def test_manifest_validation_of_near_manifests(value):
    value.setdefault("format", "tgsp/1")
    try:
        mf.validate(value)
    except FormatError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=800))
def test_evidence_parser_raises_only_evidence_errors(data):
    try:
        evidence.parse_jsonl(data)
    except tgsp.errors.EvidenceError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.text("abc", min_size=1, max_size=5), json_values), max_size=6))
def test_evidence_chain_round_trips(events):
    from datetime import datetime, timezone

    when = datetime(2030, 1, 1, tzinfo=timezone.utc)
    records = evidence.append([], [evidence.event(t, d, when) for t, d in events])
    assert evidence.parse_jsonl(evidence.encode_jsonl(records)) == records
