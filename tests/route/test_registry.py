"""The registry and its signed route index, through the real CLI where a user would be.

No torch here: the packages are small PEFT-shaped folders, signed and
encrypted for real; the index is the real hybrid DSSE document."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import tgsp
from runners.state.registry import Registry
from tgsp import route_index
from tgsp.canonical import encode
from tgsp.errors import PackageError, TgflowError
from tgsp.keyring import Keyring

from tests.helpers import PASS, cli, make_adapter, pp

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def reg(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("TGFLOW_HOME", str(home))
    monkeypatch.setenv("TGFLOW_PASSPHRASE", PASS)
    kr = Keyring(home)
    kr.generate("release", "signing", pp)
    kr.generate("operator", "recipient", pp)

    def package(version: int, route: str = "support", seed: int | None = None) -> Path:
        src = make_adapter(tmp_path / f"src-{route}-{version}-{seed}", seed=version if seed is None else seed)
        out = tmp_path / f"{route}-v{version}-{seed}.tgsp"
        tgsp.build(src, out, route=route, version=version, kind="adapter", recipients=[kr.public_file("operator").key],
                   signers=[kr.signer("release", pp)])
        return out

    class R:
        pass

    r = R()
    r.root, r.kr, r.package, r.dir = tmp_path, kr, package, tmp_path / "registry"
    r.args = ["--registry", str(r.dir)]
    r.sign = ["--signing-key", "release"]
    return r


def test_register_promote_rollback_resolve(reg, capsys):
    for v in (1, 2):
        code, out, err = cli(capsys, "route", "register", reg.package(v), *reg.args, *reg.sign, "--json")
        assert code == 0, err
        assert json.loads(out)["version"] == v
    assert cli(capsys, "route", "promote", "support", "1", *reg.args, *reg.sign)[0] == 0
    state = reg.root / "deploy-state.json"
    resolve = lambda: cli(capsys, "route", "resolve", "support", *reg.args, "--state", state, "--json")  # noqa: E731
    code, out, _ = resolve()
    first = json.loads(out)
    assert code == 0 and first["version"] == 1 and first["changed"] and Path(first["path"]).is_file()
    assert resolve()[0] == 20  # unchanged: nothing to deploy
    old_index = (reg.dir / "routes/support/index.json").read_bytes()
    assert cli(capsys, "route", "promote", "support", "2", *reg.args, *reg.sign)[0] == 0
    code, out, _ = resolve()
    assert code == 0 and json.loads(out)["version"] == 2
    code, out, _ = cli(capsys, "route", "rollback", "support", *reg.args, *reg.sign, "--json")
    moved = json.loads(out)
    assert code == 0 and moved["version"] == 1 and moved["index_version"] == 5  # alias back, index forward
    code, out, _ = resolve()
    assert code == 0 and json.loads(out)["version"] == 1 and json.loads(out)["index_version"] == 5
    code, out, _ = cli(capsys, "route", "history", "support", *reg.args, "--json")
    assert [h["action"] for h in json.loads(out)["index"]] == ["register", "register", "promote", "promote",
                                                              "rollback"]
    # a replayed older index (it still verifies on its own) is refused by a consumer that saw v5
    (reg.dir / "routes/support/index.json").write_bytes(old_index)
    code, _, err = cli(capsys, "route", "resolve", "support", *reg.args, "--state", state)
    assert code == 1 and "replayed index" in err
    # ...and a consumer without state is told nothing is wrong: that is what --state is for
    assert cli(capsys, "route", "resolve", "support", *reg.args)[0] == 0


def test_a_forked_or_frozen_or_forged_index_is_refused(reg, capsys):
    pkg = reg.package(1)
    signer = reg.kr.signer("release", pp)
    past = lambda: datetime.now(timezone.utc) - timedelta(days=40)  # noqa: E731
    Registry(reg.dir, reg.kr.trust_policy(), now=past).register(pkg, signer, alias="production")
    code, _, err = cli(capsys, "route", "resolve", "support", *reg.args)
    assert code == 1 and "expired" in err and "frozen" in err
    Registry(reg.dir, reg.kr.trust_policy()).promote("support", 1, signer)  # re-signed: live again (v2)
    state = reg.root / "s.json"
    assert cli(capsys, "route", "resolve", "support", *reg.args, "--state", state)[0] == 0
    path = reg.dir / "routes/support/index.json"
    env = json.loads(path.read_bytes())
    doc = json.loads(route_index.dsse.b64d(env["payload"]))
    fork = route_index.sign({**doc, "expires": "2099-01-01T00:00:00Z"}, [signer], datetime.now(timezone.utc))
    path.write_bytes(fork)  # same version, other bytes, validly signed: a fork
    code, _, err = cli(capsys, "route", "resolve", "support", *reg.args, "--state", state)
    assert code == 1 and "fork" in err
    doc["aliases"]["production"]["version"] = 99  # edited without the key
    env["payload"] = route_index.dsse.b64e(encode(doc))
    path.write_bytes(encode(env))
    code, _, err = cli(capsys, "route", "resolve", "support", *reg.args)
    assert code == 1 and "signature" in err.lower()


def test_a_signed_alias_whose_version_is_not_its_packages_is_refused(reg, capsys):
    """Validly signed, but the alias says v2 while the package it names is v1: which one would a
    deploy get? Refused before anything is resolved (issue 26)."""
    signer = reg.kr.signer("release", pp)
    Registry(reg.dir, reg.kr.trust_policy()).register(reg.package(1), signer, alias="production")
    path = reg.dir / "routes/support/index.json"
    doc = json.loads(route_index.dsse.b64d(json.loads(path.read_bytes())["payload"]))
    doc["aliases"]["production"]["version"] = 2
    path.write_bytes(route_index.sign({**doc, "version": doc["version"] + 1}, [signer], datetime.now(timezone.utc)))
    code, _, err = cli(capsys, "route", "resolve", "support", *reg.args)
    assert code == 1 and "says version 2, but the package it names is version 1" in err


def test_an_index_signed_by_an_untrusted_key_is_refused(reg, capsys, tmp_path):
    other = Keyring(tmp_path / "other")
    other.generate("mallory", "signing", pp)
    Registry(reg.dir, reg.kr.trust_policy()).register(reg.package(1), reg.kr.signer("release", pp), alias="production")
    raw = (reg.dir / "routes/support/index.json").read_bytes()
    doc = json.loads(route_index.dsse.b64d(json.loads(raw)["payload"]))
    forged = route_index.sign({**doc, "version": 50}, [other.signer("mallory", pp)], datetime.now(timezone.utc))
    (reg.dir / "routes/support/index.json").write_bytes(forged)
    code, _, err = cli(capsys, "route", "resolve", "support", *reg.args)
    assert code == 1 and "no trusted signer" in err


def test_an_index_cannot_point_outside_its_folder(reg):
    signer = reg.kr.signer("release", pp)
    Registry(reg.dir, reg.kr.trust_policy()).register(reg.package(1), signer)
    raw = (reg.dir / "routes/support/index.json").read_bytes()
    doc = json.loads(route_index.dsse.b64d(json.loads(raw)["payload"]))
    doc["packages"][0]["file"] = "../../../etc/passwd"
    with pytest.raises(route_index.FormatError, match="file must be"):
        route_index.sign(doc, [signer], datetime.now(timezone.utc))


def test_concurrent_editors_lose_no_update(reg):
    """Eight processes register at once: eight index versions, every package listed."""
    pkgs = [reg.package(v) for v in range(1, 9)]
    code = ("import sys; from pathlib import Path; from tgsp.keyring import Keyring; from runners.state.registry import Registry\n"
            f"kr = Keyring({str(reg.root / 'home')!r}); pp = lambda: {PASS!r}\n"
            f"Registry(Path({str(reg.dir)!r}), kr.trust_policy()).register(Path(sys.argv[1]), kr.signer('release', pp))\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(p)], cwd=ROOT) for p in pkgs]
    assert [p.wait(timeout=120) for p in procs] == [0] * 8
    doc = Registry(reg.dir, reg.kr.trust_policy()).require("support")
    assert doc["version"] == 8 and sorted(e["version"] for e in doc["packages"]) == list(range(1, 9))
    assert [h["index_version"] for h in doc["history"]] == list(range(1, 9))


def test_register_verifies_first(reg, capsys, tmp_path):
    bad = tmp_path / "bad.tgsp"
    data = bytearray(reg.package(1).read_bytes())
    data[-200] ^= 1
    bad.write_bytes(bytes(data))
    code, _, err = cli(capsys, "route", "register", bad, *reg.args, *reg.sign)
    assert code == 1 and not (reg.dir / "routes").exists()


_json = st.recursive(st.none() | st.booleans() | st.integers(-2**53 + 1, 2**53 - 1) | st.text(max_size=8),
                     lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=20)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=_json, raw=st.binary(max_size=200))
def test_the_index_parser_only_ever_refuses_cleanly(doc, raw):
    policy = tgsp.TrustPolicy()
    for data in (raw, encode(doc), encode({"payload": route_index.dsse.b64e(encode(doc)),
                                           "payloadType": route_index.INDEX_TYPE, "signatures": []})):
        with pytest.raises(PackageError):
            route_index.verify(data, policy, route="support")
    try:
        route_index.check_document(doc)
    except TgflowError:
        pass


def _valid_doc() -> dict:
    return {"format": route_index.FORMAT, "route": "support", "version": 1, "issued": "2026-01-01T00:00:00Z",
            "expires": "2099-01-01T00:00:00Z", "aliases": {}, "packages": [], "history": [], "signers": []}


@settings(max_examples=200, deadline=None)
@given(signers=st.lists(st.fixed_dictionaries({"keyid": st.sampled_from(["ab" * 32, "x"]), "name": _json,
                                               "version": _json, "signed_at": st.sampled_from(
                                                   ["2026-01-01T00:00:00Z", "soon"]), "public": _json,
                                               "lineage": _json}), max_size=2) | _json)
def test_hostile_signers_in_a_well_shaped_index_are_refused_cleanly(signers):
    doc = {**_valid_doc(), "signers": signers}
    raw = encode({"payload": route_index.dsse.b64e(encode(doc)), "payloadType": route_index.INDEX_TYPE,
                  "signatures": [{"keyid": "ab" * 32, "sig": route_index.dsse.b64e(b"x" * 64)}]})
    with pytest.raises(PackageError):
        route_index.verify(raw, tgsp.TrustPolicy(), route="support")


@pytest.mark.parametrize("content", [b"[" * 100_000 + b"]" * 100_000, b"{not json", b"\xff\xfe"])
def test_an_unreadable_consumer_state_is_bad_input(tmp_path, content):
    """route resolve --state FILE: the consumer's own file; exit 2 as docs/cli.md says (issue 26)."""
    from runners.state.registry import load_state
    from tgsp.errors import InputError

    state = tmp_path / "state.json"
    state.write_bytes(content)
    with pytest.raises(InputError, match="consumer state .* is unreadable"):
        load_state(state)


def test_rollback_reads_an_odd_history_defensively(reg, capsys):
    """history[] is informative (format.md §11): a signed index whose entries are odd makes rollback
    say there is nothing to roll back to, not crash (found while closing format.md, issue 26)."""
    signer = reg.kr.signer("release", pp)
    Registry(reg.dir, reg.kr.trust_policy()).register(reg.package(1), signer, alias="production")
    path = reg.dir / "routes/support/index.json"
    doc = json.loads(route_index.dsse.b64d(json.loads(path.read_bytes())["payload"]))
    doc["history"] = ["not an object", {"alias": "production", "action": "promote", "package_id": "sha256:" + "9" * 64},
                      {"alias": "production"}]
    path.write_bytes(route_index.sign({**doc, "version": doc["version"] + 1}, [signer], datetime.now(timezone.utc)))
    code, _, err = cli(capsys, "route", "rollback", "support", *reg.args, *reg.sign)
    assert code == 2 and "nothing to roll back to" in err
