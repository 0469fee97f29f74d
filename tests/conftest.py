"""Shared fixtures: real keys in a real keyring, real packages on disk."""

from __future__ import annotations

import os
from datetime import datetime, timezone

import pytest

import tgsp
from tgsp import Keyring

from tests.helpers import PASS, make_adapter, pp

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One intra-op thread per worker: with -n 2 on 2 cores, torch's default (one thread per core,
    # in every worker) oversubscribes the CPU and made the training tests 2-3x slower. Child
    # processes the tests start (tgflow as a subprocess) inherit it.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - the [test] extra installs torch
        pass


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """One keyring with a signer, a second signer and a recipient, plus a
    signed+encrypted package built from a small adapter. Read-only: tests
    that change things copy what they need."""
    root = tmp_path_factory.mktemp("world")
    kr = Keyring(root / "home")
    kr.generate("alice", "signing", pp)
    kr.generate("bob", "signing", pp)
    kr.generate("ops", "recipient", pp)
    src = make_adapter(root / "adapter")
    signer = kr.signer("alice", pp)
    pkg = root / "signed.tgsp"
    tgsp.build(src, pkg, route="support", version=3, kind="adapter",
               recipients=[kr.public_file("ops").key], signers=[signer],
               expires=datetime(2099, 1, 1, tzinfo=timezone.utc), chunk_size=4096)
    class W:  # noqa: D401 - a plain bag of fixtures
        pass
    w = W()
    w.root, w.kr, w.src, w.pkg, w.signer = root, kr, src, pkg, signer
    w.bytes = pkg.read_bytes()
    w.policy = lambda **kw: kr.trust_policy(**kw)
    return w


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty keyring folder wired into the CLI's environment."""
    h = tmp_path / "home"
    monkeypatch.setenv("TGFLOW_HOME", str(h))
    monkeypatch.setenv("TGFLOW_PASSPHRASE", PASS)
    monkeypatch.delenv("TGFLOW_PASSPHRASE_FILE", raising=False)
    return h
