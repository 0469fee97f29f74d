"""Sharded digests of large stored entries (format.md §4.1): parallel hashing that
agrees with the streaming hash, names the damaged shard, and refuses malformed lists."""

from __future__ import annotations

import copy
import hashlib
import io
import os

import pytest
from hypothesis import given, settings, strategies as st

import tgsp
from tgsp import _shards, manifest as mf
from tgsp.errors import FormatError, InputError
from tgsp.package import open_package

from tests.helpers import files_of, make_adapter, pp

SHARD = 4096


@pytest.fixture
def sharded(world, tmp_path):
    src = make_adapter(tmp_path / "src", weights=5 * SHARD + 123)
    (src / "plain.bin").write_bytes(os.urandom(3 * SHARD))  # three shards' worth
    enc, plain = tmp_path / "enc.tgsp", tmp_path / "plain.tgsp"
    tgsp.build(src, enc, recipients=[world.kr.public_file("ops").key], signers=[world.signer], chunk_size=4096,
               shard_size=SHARD)
    tgsp.build(src, plain, signers=[world.signer], shard_size=SHARD)
    return src, enc, plain


def _stored(pkg_path, name):
    with open_package(pkg_path) as pkg:
        f = next(f for f in pkg.manifest["files"] if f["path"] == name)
        return f, pkg.entry(mf.PAYLOAD_PREFIX + name), pkg.manifest


def test_large_encrypted_entries_are_sharded_and_nothing_else_is(sharded):
    src, enc, plain = sharded
    big, entry, m = _stored(enc, "adapter_model.safetensors")
    assert m["critical"] == ["shards"]
    shard_size, digests = mf.shards_of(big["stored"])
    data = enc.read_bytes()[entry.data_offset:entry.data_offset + entry.size]
    # Each listed digest is the SHA-256 of that slice of the stored bytes, and sha256 is their root.
    assert list(digests) == [hashlib.sha256(data[i:i + shard_size]).hexdigest()
                             for i in range(0, len(data), shard_size)]
    assert big["stored"]["sha256"] == _shards.root(len(data), shard_size, digests)
    assert big["sha256"] == hashlib.sha256((src / "adapter_model.safetensors").read_bytes()).hexdigest()
    small, _, _ = _stored(enc, "adapter_config.json")
    assert mf.shards_of(small["stored"]) is None
    # Unencrypted entries keep one digest, the plaintext's: verify then checks what in-toto subjects name.
    with open_package(plain) as pkg:
        assert "critical" not in pkg.manifest
        assert all(f["stored"] == {"size": f["size"], "sha256": f["sha256"]} for f in pkg.manifest["files"])


def test_a_sharded_unencrypted_entry_is_refused(sharded):
    _, enc, _ = sharded
    with open_package(enc) as pkg:
        m = copy.deepcopy(pkg.manifest)
    big = next(f for f in m["files"] if mf.SHARDS in f["stored"])
    m.pop("encryption")
    m["files"] = [big]
    with pytest.raises(FormatError, match="has a sharded digest; only encrypted entries may"):
        mf.validate(m)


def test_only_plain_files_are_read_with_pread(sharded, monkeypatch):
    import gzip

    _, enc, _ = sharded
    with open(enc, "rb") as buffered, open(enc, "rb", buffering=0) as raw:
        assert _shards.plain_fd(buffered) == buffered.fileno() and _shards.plain_fd(raw) == raw.fileno()
    assert _shards.plain_fd(io.BytesIO(b"x")) is None
    packed = enc.with_suffix(".gz")
    packed.write_bytes(gzip.compress(enc.read_bytes()))
    monkeypatch.setenv("TGFLOW_HASH_THREADS", "2")
    with gzip.open(packed, "rb") as gz:  # its fileno() is the compressed file's: never pread
        assert _shards.plain_fd(gz) is None


def test_memory_is_bounded_by_the_workers_not_the_shards(tmp_path, monkeypatch):
    import tracemalloc

    path = tmp_path / "blob"
    path.write_bytes(os.urandom(16 << 20))
    monkeypatch.setenv("TGFLOW_HASH_THREADS", "2")
    tracemalloc.start()
    with open(path, "rb") as f:
        got = _shards.hash_region(f, 0, 16 << 20, SHARD)  # 4,096 shards
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(got.shards) == 4096 and peak < 2 << 20, peak


def test_sharded_packages_verify_and_unpack_byte_identical(world, sharded, tmp_path):
    src, enc, plain = sharded
    for path, ids in ((enc, world.kr.identities("ops", pp)), (plain, None)):  # plain: one digest each
        assert tgsp.verify(path, world.policy()).ok
        out = tmp_path / f"out-{path.stem}"
        tgsp.unpack(path, out, world.policy(), identities=ids)
        assert files_of(out) == files_of(src)


@pytest.mark.parametrize("threads", ["1", "3"])
def test_a_damaged_shard_is_named_and_nothing_is_unpacked(world, sharded, tmp_path, monkeypatch, threads):
    monkeypatch.setenv("TGFLOW_HASH_THREADS", threads)
    _, enc, _ = sharded
    _, entry, _ = _stored(enc, "adapter_model.safetensors")
    bad = bytearray(enc.read_bytes())
    bad[entry.data_offset + 2 * SHARD + 5] ^= 1
    broken = tmp_path / "broken.tgsp"
    broken.write_bytes(bad)
    report = tgsp.verify(broken, world.policy())
    assert report.first_failure.name == "digests"
    assert "shard 2 (bytes 8192-12287)" in report.first_failure.detail
    with pytest.raises(tgsp.errors.TgflowError):
        tgsp.unpack(broken, tmp_path / "o", world.policy(), identities=world.kr.identities("ops", pp))
    assert not (tmp_path / "o").exists()


@settings(max_examples=60, deadline=None)
@given(size=st.integers(0, 5 * SHARD + 7), shard=st.sampled_from([SHARD, SHARD + 1, 3 * SHARD]),
       threads=st.sampled_from(["1", "2", "5"]), chunks=st.integers(1, 9000))
def test_parallel_sequential_and_streaming_digests_agree(tmp_path_factory, size, shard, threads, chunks):
    data = os.urandom(size)
    path = tmp_path_factory.mktemp("h") / "blob"
    path.write_bytes(b"x" * 511 + data)  # an unaligned offset, as in an archive
    os.environ["TGFLOW_HASH_THREADS"] = threads
    try:
        with open(path, "rb") as f:
            parallel = _shards.hash_region(f, 511, size, shard)
    finally:
        del os.environ["TGFLOW_HASH_THREADS"]
    sequential = _shards.hash_region(io.BytesIO(b"x" * 511 + data), 511, size, shard)  # no file descriptor
    streamed = _shards.Hasher(shard)
    for i in range(0, size, chunks):
        streamed.update(memoryview(data)[i:i + chunks])
    want = [hashlib.sha256(data[i:i + shard]).hexdigest() for i in range(0, size, shard)] or \
        [hashlib.sha256(b"").hexdigest()]
    assert list(parallel.shards) == list(sequential.shards) == list(streamed.result().shards) == want
    assert parallel.root == streamed.result().root == _shards.root(size, shard, want)


def _manifest_with(sharded, change):
    _, enc, _ = sharded
    with open_package(enc) as pkg:
        m = copy.deepcopy(pkg.manifest)
    big = next(f for f in m["files"] if mf.SHARDS in f["stored"])
    change(m, big["stored"])
    return m


@pytest.mark.parametrize("change, words", [
    (lambda m, s: m.pop("critical"), "does not list 'shards' in critical"),
    (lambda m, s: s["shards"]["sha256"].pop(), "must list 6 digests"),
    (lambda m, s: s["shards"]["sha256"].reverse(), "not the root of its shard digests"),
    (lambda m, s: s.update(sha256="0" * 64), "not the root of its shard digests"),
    (lambda m, s: s["shards"].update(size=1024), "shard size of .* is out of range"),
    (lambda m, s: s["shards"].update(size=1 << 20), "spans 1 shard"),
    (lambda m, s: s["shards"].update(extra=1), "must have exactly"),
    (lambda m, s: s["shards"]["sha256"].__setitem__(0, "A" * 64), "64 lowercase hex"),
])
def test_malformed_shard_lists_are_format_errors(sharded, change, words):
    with pytest.raises(FormatError, match=words):
        mf.validate(_manifest_with(sharded, change))


def test_shard_size_is_checked_when_building(tmp_path):
    src = make_adapter(tmp_path / "src")
    with pytest.raises(InputError, match="shard size"):
        tgsp.build(src, tmp_path / "p.tgsp", shard_size=100)
    assert not (tmp_path / "p.tgsp").exists()


def test_a_bad_thread_count_is_the_callers_mistake_not_the_packages(world, sharded, monkeypatch, capsys):
    from tgflow_cli.main import main

    monkeypatch.setenv("TGFLOW_HASH_THREADS", "lots")
    monkeypatch.setenv("TGFLOW_HOME", str(world.root / "home"))
    with pytest.raises(InputError, match="TGFLOW_HASH_THREADS='lots' is not a positive whole number"):
        tgsp.verify(sharded[1], world.policy())
    assert main(["tgsp", "verify", str(sharded[1])]) == 2
    assert "TGFLOW_HASH_THREADS" in capsys.readouterr().err
