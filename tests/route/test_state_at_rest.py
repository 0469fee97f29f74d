"""Nothing private at rest: sealed state files, signed checkpoint pointers, migration of plaintext.

The end-to-end byte scan after a SIGTERM is in tests/runners/test_round.py
(test_killed_round_resumes_to_the_same_adapter)."""

from __future__ import annotations

import json
import os
import struct

import pytest
from hypothesis import given, settings, strategies as st

from runners.data.feeds import Example
from runners.state import keys as state_keys
from runners.state.checkpoint import Checkpoint, CheckpointStore
from runners.state.store import SEALED, RouteStore
from tgsp import sealed
from tgsp.errors import DecryptionError, FormatError, InputError, NotARecipientError
from tgsp.keys import RECIPIENT, PrivateKey

SECRET = b"state at rest test secret 32 by."


def _keys(route="support", secret=SECRET):
    return state_keys.from_secret(route, secret)


# --- the sealed file format ---------------------------------------------------------------
def test_a_sealed_file_opens_only_with_its_binding_and_a_listed_key():
    a, b = PrivateKey.generate(RECIPIENT), PrivateKey.generate(RECIPIENT)
    data = bytes(range(256)) * 5000  # over one chunk
    blob = sealed.seal(data, [a.public, b.public], {"route": "r", "kind": "t", "step": 3}, chunk_size=4096)
    assert data[:64] not in blob
    assert sealed.open_sealed(blob, [b], {"route": "r", "kind": "t", "step": 3}) == data
    with pytest.raises(FormatError, match=r"step \(3, expected 4\)"):
        sealed.open_sealed(blob, [a], {"route": "r", "kind": "t", "step": 4})
    with pytest.raises(NotARecipientError):
        sealed.open_sealed(blob, [PrivateKey.generate(RECIPIENT)], {"route": "r", "kind": "t", "step": 3})
    for cut in (blob[:-1], blob[:-4112], blob + b"\0"):
        with pytest.raises(DecryptionError):
            sealed.open_sealed(cut, [a], {"route": "r", "kind": "t", "step": 3})
    # The header is bound: a re-encoded header with the same meaning still fails to decrypt.
    h = sealed.read_header(blob)
    head = h.prefix[len(sealed.MAGIC) + 4:]
    other = head.replace(b'"chunk_size":4096', b'"chunk_size":4096 ')
    with pytest.raises(FormatError):  # not canonical: refused before any key is touched
        sealed.open_sealed(sealed.MAGIC + struct.pack(">I", len(other)) + other + blob[len(h.prefix):], [a],
                           {"route": "r", "kind": "t", "step": 3})


def test_what_the_writer_writes_the_reader_opens_and_nothing_else():
    a = PrivateKey.generate(RECIPIENT)
    many = [PrivateKey.generate(RECIPIENT).public for _ in range(sealed.MAX_RECIPIENTS - 1)]
    blob = sealed.seal(b"x", [a.public, a.public, *many], {"kind": "t"})  # one key named twice: one entry
    assert len(sealed.read_header(blob).recipients) == sealed.MAX_RECIPIENTS
    assert sealed.open_sealed(blob, [a], {"kind": "t"}) == b"x"
    with pytest.raises(ValueError, match="1 to 64"):
        sealed.seal(b"x", [a.public, *many, PrivateKey.generate(RECIPIENT).public], {"kind": "t"})
    with pytest.raises(FormatError, match="true"):  # the binding is compared as JSON, types included
        sealed.open_sealed(sealed.seal(b"x", [a.public], {"step": True}), [a], {"step": 1})
    h = sealed.read_header(blob)
    doc = json.loads(h.prefix[len(sealed.MAGIC) + 4:])
    doc["recipients"].reverse()
    from tgsp.canonical import encode
    head = encode(doc)
    with pytest.raises(FormatError, match="sorted"):
        sealed.read_header(sealed.MAGIC + struct.pack(">I", len(head)) + head + blob[len(h.prefix):])


def test_flipping_any_byte_of_a_sealed_file_is_refused():
    a = PrivateKey.generate(RECIPIENT)
    blob = sealed.seal(b"secret weights" * 100, [a.public], {"kind": "t"}, chunk_size=1024)
    for at in range(0, len(blob), max(1, len(blob) // 97)):
        bad = bytearray(blob)
        bad[at] ^= 0x01
        with pytest.raises((FormatError, DecryptionError, NotARecipientError)):
            sealed.open_sealed(bytes(bad), [a], {"kind": "t"})


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_the_header_parser_only_ever_refuses_cleanly(tail):
    for blob in (tail, sealed.MAGIC + tail, sealed.MAGIC + struct.pack(">I", len(tail)) + tail):
        try:
            sealed.read_header(blob)
        except FormatError:
            pass


# --- checkpoints ---------------------------------------------------------------------------
def _ckpt(step: int):
    import torch

    g = torch.Generator().manual_seed(step)
    return Checkpoint(step, {"run": "x", "losses": [1.0] * step, "tokens": 7 * step},
                      {"lora_A": torch.randn(4, 8, generator=g)}, {"0.exp_avg": torch.randn(4, 8, generator=g),
                                                                  "0.step": torch.tensor(float(step))},
                      {"cpu": torch.get_rng_state()})


def _saved(folder, keys=None, fp=None):
    store = CheckpointStore(folder, keys or _keys())
    assert store.load(fp or {"run": "x"}) is None
    store.save(_ckpt(5))
    store.save(_ckpt(10))
    return store


def test_a_checkpoint_round_trips_sealed_and_names_its_digest(tmp_path):
    import torch

    _saved(tmp_path / "ck")
    files = sorted(p.name for p in (tmp_path / "ck").iterdir())
    assert files == ["current.json", "step-00000010.sealed"]  # the older one is gone
    store = CheckpointStore(tmp_path / "ck", _keys())
    back = store.load({"run": "x"})
    assert back.step == 10 and back.meta["tokens"] == 70
    assert torch.equal(back.params["lora_A"], _ckpt(10).params["lora_A"])
    assert store.resumed["step"] == 10 and len(store.resumed["checkpoint_sha256"]) == 64
    assert b"data_offsets" not in (tmp_path / "ck" / "step-00000010.sealed").read_bytes()


def test_a_checkpoint_of_another_round_start_is_not_resumed_and_says_why(tmp_path):
    _saved(tmp_path / "ck")
    store = CheckpointStore(tmp_path / "ck", _keys())
    assert store.load({"run": "y"}) is None
    assert "belongs to another start of this round" in store.ignored


@pytest.mark.parametrize("attack", ["pointer-byte", "other-signer", "swapped-file", "grown-file", "fifo", "other-route"])
def test_a_planted_or_swapped_checkpoint_is_refused(tmp_path, attack):
    folder = tmp_path / "ck"
    _saved(folder)
    keys = _keys()
    if attack == "pointer-byte":
        env = json.loads((folder / "current.json").read_text())
        env["payload"] = env["payload"][:-4] + ("AAAA" if env["payload"][-4:] != "AAAA" else "BBBB")
        (folder / "current.json").write_text(json.dumps(env))
    elif attack == "other-signer":  # same recipients (anyone can seal to public keys), another signer
        planted = state_keys.StateKeys("support", keys.recipients, keys.names, keys.load_identities,
                                       PrivateKey.generate("signing"))
        (folder / "current.json").unlink()
        s = CheckpointStore(folder, planted)
        s.load({"run": "x"})
        s.save(_ckpt(20))
    elif attack == "swapped-file":
        other = _saved(tmp_path / "other")
        other.save(_ckpt(11))
        (folder / "step-00000010.sealed").write_bytes((tmp_path / "other" / "step-00000011.sealed").read_bytes())
    elif attack == "grown-file":  # refused on its size, before a byte is read
        with open(folder / "step-00000010.sealed", "ab") as f:
            f.truncate(1 << 40)
    elif attack == "fifo":  # never blocks on it
        (folder / "step-00000010.sealed").unlink()
        os.mkfifo(folder / "step-00000010.sealed")
    else:
        keys = _keys("billing")
    with pytest.raises(InputError, match="refused|its signed pointer names"):
        CheckpointStore(folder, keys).load({"run": "x"})


def test_a_missing_identity_is_one_line_naming_the_key(tmp_path):
    _saved(tmp_path / "ck")
    k = _keys()
    blind = state_keys.StateKeys("support", k.recipients, ("operator",), lambda: [], k.signing_key)
    with pytest.raises(InputError, match="holds none of their private keys \\(operator\\)") as err:
        CheckpointStore(tmp_path / "ck", blind).load({"run": "x"})
    assert "\n" not in str(err.value) and "operator" in err.value.hint


def test_a_plaintext_checkpoint_of_an_earlier_tgflow_is_deleted_unread(tmp_path):
    """Nothing authenticates a plaintext checkpoint: resuming it would let whoever can write the
    folder plant weights, optimizer and noise state to be signed. It is deleted and the round starts over."""
    from safetensors.torch import save_file

    folder, ck = tmp_path / "ck", _ckpt(5)
    old = folder / "step-00000005"
    old.mkdir(parents=True)
    for part in ("params", "optim", "rng"):
        save_file(getattr(ck, part), str(old / f"{part}.safetensors"))
    (old / "meta.json").write_text(json.dumps({"format": "tgflow-checkpoint/1", "step": 5, "run": "x",
                                               "losses": [1.0] * 5, "tokens": 35}))
    (folder / "current.json").write_text(json.dumps({"current": "step-00000005"}))
    (folder / "step-00000006").symlink_to(old)  # a link is removed, never followed
    store = CheckpointStore(folder, _keys())
    assert store.load({"run": "x"}) is None and store.resumed is None
    assert "deleted unread" in store.ignored and "starts over" in store.ignored
    assert list(folder.iterdir()) == []


# --- the route store's private files ----------------------------------------------------------
def test_seen_retained_and_residual_are_sealed(tmp_path):
    import numpy as np

    with RouteStore(tmp_path, "support", keys=_keys()).session("t") as store:
        store.add_seen({"d1"}, {"n1"})
        store.retain(1, [Example("secret prompt one", "secret target")], [])
        store.set_residual({"w": np.ones(3, dtype=np.float32)})
    for name in ("novelty/seen.sealed", "federation/residual.sealed"):
        assert sealed.is_sealed((tmp_path / name).read_bytes())
    assert b"secret prompt" not in (tmp_path / "retained" / "v1.sealed").read_bytes()
    with RouteStore(tmp_path, "support", keys=_keys()).session("t") as store:
        assert store.seen().digests == {"d1"} and list(store.residual()["w"]) == [1, 1, 1]
    # A file moved to another version's name no longer opens.
    (tmp_path / "retained" / "v1.sealed").rename(tmp_path / "retained" / "v2.sealed")
    with RouteStore(tmp_path, "support", keys=_keys()).session("t") as store:
        with pytest.raises(InputError, match="version"):
            store._sealed_doc(tmp_path / "retained" / "v2.sealed", {"kind": "retained", "version": 2},
                              "tgflow.retained-examples/1", "retained examples")


def test_plaintext_state_of_an_earlier_tgflow_is_sealed_and_deleted(tmp_path):
    with RouteStore(tmp_path, "support").session("t"):
        pass
    (tmp_path / "novelty").mkdir()
    (tmp_path / "novelty" / "seen.json").write_text(json.dumps(
        {"format": "tgflow.novelty-seen/1", "digests": ["d1"], "near": []}))
    (tmp_path / "retained").mkdir()
    (tmp_path / "retained" / "v1.json").write_text(json.dumps(
        {"format": "tgflow.retained-examples/1", "version": 1, "train": [["the private prompt", "t"]],
         "heldout": []}))
    elsewhere = tmp_path.parent / "not-state.safetensors"
    elsewhere.write_bytes(b"someone else's file")
    (tmp_path / "federation").mkdir()
    (tmp_path / "federation" / "residual.safetensors").symlink_to(elsewhere)
    with RouteStore(tmp_path, "support", keys=_keys()).session("t") as store:
        assert store.seen().digests == {"d1"}
        sealed_records = [r for r in store.records if r["type"] == SEALED]
        assert len(sealed_records) == 1 and store.residual() == {}
        assert "federation/residual.safetensors (a link, removed unread)" in json.dumps(sealed_records)
    assert elsewhere.read_bytes() == b"someone else's file"
    assert not (tmp_path / "novelty" / "seen.json").exists() and not (tmp_path / "retained" / "v1.json").exists()
    assert b"the private prompt" not in b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
