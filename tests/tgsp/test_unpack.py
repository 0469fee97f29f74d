"""Unpacking: byte-identical output, opaque failures, nothing half-written."""

from __future__ import annotations

import os

import pytest

import tgsp
from tgsp import _stream
from tgsp.errors import DecryptionError, InputError, NotARecipientError, OutputError, VerificationFailed, WrongPassphraseError
from tgsp.keyring import Keyring

from tests.helpers import files_of, make_adapter, pp


def test_unpacked_folder_is_byte_identical(world, tmp_path):
    out = tmp_path / "out"
    res = tgsp.unpack(world.pkg, out, world.policy(), identities=world.kr.identities("ops", pp))
    assert files_of(out) == files_of(world.src)
    assert res.files == 4 and res.report.ok


def test_tssp_extension_is_the_same_format(world, tmp_path):
    tssp = tmp_path / "same.tssp"
    tssp.write_bytes(world.bytes)
    out = tmp_path / "o"
    tgsp.unpack(tssp, out, world.policy(), identities=world.kr.identities("ops", pp))
    assert files_of(out) == files_of(world.src)


def test_large_multi_chunk_file_round_trips(world, tmp_path):
    src = make_adapter(tmp_path / "src", weights=3 * 4096 + 17)  # 4 chunks, short last
    (src / "exact.bin").write_bytes(os.urandom(2 * 4096))  # exact multiple of the chunk
    pkg = tmp_path / "p.tgsp"
    tgsp.build(src, pkg, recipients=[world.kr.public_file("ops").key], signers=[world.signer], chunk_size=4096)
    out = tmp_path / "o"
    tgsp.unpack(pkg, out, world.policy(), identities=world.kr.identities("ops", pp))
    assert files_of(out) == files_of(src)


def test_wrong_recipient_names_the_public_key_ids_and_writes_nothing(world, tmp_path):
    """Recipient key ids are public (age names them too); only a failed decryption stays opaque."""
    stranger = Keyring(tmp_path / "s")
    stranger.generate("eve", "recipient", pp)
    out = tmp_path / "out"
    with pytest.raises(NotARecipientError) as exc:
        tgsp.unpack(world.pkg, out, world.policy(), identities=stranger.identities("eve", pp))
    eve, ops = stranger.public_file("eve").keyid[:16], world.kr.public_file("ops").keyid[:16]
    assert str(exc.value) == f"none of your identities ({eve}) is a recipient of this package ({ops})"
    assert isinstance(exc.value, DecryptionError)  # still exit 4
    assert not out.exists() and list(tmp_path.glob(".out.*")) == []


def test_wrong_passphrase_is_opaque(world):
    with pytest.raises(WrongPassphraseError) as exc:
        world.kr.identities("ops", lambda: "not it")
    assert "wrong passphrase" in str(exc.value)


def test_signed_but_undecryptable_chunk_is_opaque_and_nothing_is_half_written(world, tmp_path, monkeypatch):
    """A buggy or malicious builder seals chunk 2 under the wrong nonce and signs
    the result: every digest and signature checks out, but AEAD must refuse it,
    opaquely, after earlier files were already decrypted, leaving nothing behind."""
    real = _stream.nonce
    monkeypatch.setattr(_stream, "nonce", lambda i, last: real(i + 100 if i == 2 else i, last))
    src = make_adapter(tmp_path / "src", weights=5 * 4096)
    pkg = tmp_path / "evil.tgsp"
    tgsp.build(src, pkg, recipients=[world.kr.public_file("ops").key], signers=[world.signer], chunk_size=4096)
    monkeypatch.undo()
    assert tgsp.verify(pkg, world.policy()).ok
    out = tmp_path / "out"
    with pytest.raises(DecryptionError) as exc:
        tgsp.unpack(pkg, out, world.policy(), identities=world.kr.identities("ops", pp))
    assert str(exc.value) == "decryption failed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.tgsp", "src"]


def test_encrypted_package_without_identity_is_a_clear_error(world, tmp_path):
    with pytest.raises(InputError, match="encrypted") as exc:
        tgsp.unpack(world.pkg, tmp_path / "o", world.policy())
    assert "--identity" in exc.value.hint


def test_refuses_non_empty_output_folder(world, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not an empty folder"):
        tgsp.unpack(world.pkg, out, world.policy(), identities=world.kr.identities("ops", pp))
    assert (out / "keep.txt").read_text() == "mine"


def test_failed_verification_extracts_nothing(world, tmp_path):
    bad = tmp_path / "bad.tgsp"
    data = bytearray(world.bytes)
    data[600] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(VerificationFailed):
        tgsp.unpack(bad, tmp_path / "o", world.policy(), identities=world.kr.identities("ops", pp))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tgsp"]


def test_stream_sizes_invert():
    for chunk in (1024, 4096):
        for size in [0, 1, chunk - 1, chunk, chunk + 1, 5 * chunk, 5 * chunk + 3]:
            assert _stream.plain_size_of(_stream.stored_size(size, chunk), chunk) == size
    with pytest.raises(ValueError):
        _stream.plain_size_of(5, 1024)


def test_stream_rejects_reorder_truncation_and_wrong_file():
    from cryptography.exceptions import InvalidTag

    key = os.urandom(32)
    c = _stream.file_cipher(key, "a")
    chunks = [c.encrypt(_stream.nonce(i, i == 2), bytes([i]) * 8, None) for i in range(3)]
    assert c.decrypt(_stream.nonce(1, False), chunks[1], None) == bytes([1]) * 8
    with pytest.raises(InvalidTag):
        c.decrypt(_stream.nonce(0, False), chunks[1], None)  # reordered
    with pytest.raises(InvalidTag):
        c.decrypt(_stream.nonce(1, True), chunks[1], None)  # truncated after chunk 1
    with pytest.raises(InvalidTag):
        _stream.file_cipher(key, "b").decrypt(_stream.nonce(1, False), chunks[1], None)  # moved to another file


def test_read_payload_compares_stored_digests_before_it_decrypts(world, tmp_path, monkeypatch):
    """format.md §8's order (issue 26: a he-secret import decrypted first): a changed stored byte
    is refused by its digest, and no decryption is attempted."""
    from tgsp.package import open_package
    from tgsp.unpack import read_payload

    with open_package(world.pkg) as pkg:
        entry = pkg.entry("payload/adapter_model.safetensors")
    bad = tmp_path / "bad.tgsp"
    data = bytearray(world.bytes)
    data[entry.data_offset + 100] ^= 1
    bad.write_bytes(bytes(data))
    calls = []
    monkeypatch.setattr(_stream, "file_cipher", lambda *a, **k: calls.append(a) or pytest.fail("decrypted first"))
    with pytest.raises(VerificationFailed, match="digests"):
        read_payload(bad, world.policy(), identities=world.kr.identities("ops", pp))
    assert calls == []
