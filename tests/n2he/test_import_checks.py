"""key import of an HE "public" file deserializes the context and runs the round's checks first
(issue 26): a file holding the secret key, random or truncated bytes, a BFV context and params
that disagree with the context are refused with exit 2, and nothing reaches the trust store."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

ts = pytest.importorskip("tenseal")

from runners.n2he import ckks  # noqa: E402
from tgflow_cli.main import main  # noqa: E402
from tgsp.he_store import HEPublic  # noqa: E402

from tests.helpers import PASS  # noqa: E402


def _file(path: Path, context: bytes, params: dict | None = None) -> Path:
    pub = HEPublic("he", 1, "2026-12-01T00:00:00Z", params or ckks.DEFAULT.to_dict(), context)
    path.write_text(json.dumps(pub.to_dict()))
    return path


def _bfv() -> bytes:
    ctx = ts.context(ts.SCHEME_TYPE.BFV, 8192, plain_modulus=1032193)
    ctx.make_context_public()
    return ctx.serialize()


@pytest.fixture(scope="module")
def secret_ctx():
    return ckks.new_secret_context()


CASES = {
    "the secret key": lambda c: ckks.secret_bytes(c),
    "random bytes": lambda c: os.urandom(4096),
    "a truncated context": lambda c: ckks.public_bytes(c)[:5000],
    "a BFV context": lambda c: _bfv(),
}
SAYS = {"the secret key": "holds a secret key", "random bytes": "not a TenSEAL HE context",
        "a truncated context": "not a TenSEAL HE context", "a BFV context": "is BFV, not CKKS",
        "params that disagree": "own parameters are not the ones it is recorded with"}


@pytest.mark.parametrize("case", [*CASES, "params that disagree"])
def test_a_bad_he_public_file_is_refused_and_nothing_is_stored(tmp_path, monkeypatch, capsys, secret_ctx, case):
    monkeypatch.setenv("TGFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TGFLOW_PASSPHRASE", PASS)
    if case == "params that disagree":  # a valid public context, declared as N=16384
        wrong = {**ckks.DEFAULT.to_dict(), "poly_modulus_degree": 16384}
        path = _file(tmp_path / "he.json", ckks.public_bytes(secret_ctx), wrong)
    else:
        path = _file(tmp_path / "he.json", CASES[case](secret_ctx))
    code = main(["key", "import", str(path), "--name", "he"])
    err = capsys.readouterr().err
    assert code == 2 and SAYS[case] in err, err
    assert not list((tmp_path / "home").rglob("he.json"))  # nothing trusted, nothing written


def test_a_real_public_context_is_trusted_and_no_secret_is_world_readable(tmp_path, monkeypatch, capsys, secret_ctx):
    monkeypatch.setenv("TGFLOW_HOME", str(tmp_path / "home"))
    path = _file(tmp_path / "he.json", ckks.public_bytes(secret_ctx))
    assert main(["key", "import", str(path), "--name", "he"]) == 0
    stored = list((tmp_path / "home").rglob("he.json"))
    assert len(stored) == 1 and not ts.context_from(HEPublic.from_dict(json.loads(stored[0].read_text())).context
                                                   ).has_secret_key()
    for f in (tmp_path / "home").rglob("*"):  # only public material may be readable by others
        if f.is_file() and f.stat().st_mode & stat.S_IROTH:
            assert "sealed" not in f.name and "keys" not in f.parts
