"""The route registry on an OCI registry (``--registry oci://HOST/REPO``): the same commands and
the same trust as a folder. The index is a signed artifact, each package its own artifact named
by digest, aliases come from the signed index only, consumers still refuse replays, and racing
editors on different machines lose no version (compare-and-swap on the index tag)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runners.oci import artifact
from runners.oci.client import Access
from runners.oci.refs import parse as parse_ref
from runners.state.oci_backend import OciBackend
from runners.state.registry import at
from tgsp.errors import RegistryConflict

from tests.helpers import cli
from tests.runners.conftest import tiny_model, workspace  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[2]


def _reg(registry) -> list[str]:
    return ["--registry", f"oci://{registry.host}/routes", "--plain-http"]


def test_every_route_command_on_an_oci_registry(registry, world, capsys, tmp_path):
    r, sign = _reg(registry), ["--signing-key", "release"]
    for v in (1, 2):
        code, out, err = cli(capsys, "route", "register", world.package(v), *r, *sign, "--json")
        assert code == 0, err
        assert json.loads(out)["version"] == v
    assert cli(capsys, "route", "promote", "support", "1", *r, *sign)[0] == 0
    state = tmp_path / "deploy.json"
    code, out, err = cli(capsys, "route", "resolve", "support", *r, "--state", state, "--json")
    assert code == 0, err
    got = json.loads(out)
    assert got["version"] == 1 and Path(got["path"]).is_file()
    assert cli(capsys, "route", "resolve", "support", *r, "--state", state)[0] == 20
    assert cli(capsys, "route", "promote", "support", "2", *r, *sign)[0] == 0
    code, out, err = cli(capsys, "route", "resolve", "support", *r, "--state", state, "--json")
    assert code == 0 and json.loads(out)["version"] == 2, err
    assert cli(capsys, "route", "rollback", "support", *r, *sign)[0] == 0
    code, out, err = cli(capsys, "route", "history", "support", *r, "--json")
    assert [h["action"] for h in json.loads(out)["index"]] == ["register", "register", "promote", "promote", "rollback"]
    code, out, err = cli(capsys, "route", "list", *r, "--json")
    listed = json.loads(out)["routes"]
    assert [x["route"] for x in listed] == ["support"] and listed[0]["aliases"]["production"] == 1
    code, out, err = cli(capsys, "route", "refresh", "support", *r, *sign)
    assert code == 0, err
    status, _, body = registry.api("/v2/routes/tags/list", accept="application/json")
    tags = set(json.loads(body)["tags"])
    assert "index-support" in tags and sum(t.startswith("pkg-") for t in tags) == 2


def test_the_index_version_that_lists_a_package_is_its_referrer(registry, world, capsys):
    pkg = world.package(1)
    assert cli(capsys, "route", "register", pkg, *_reg(registry), "--signing-key", "release")[0] == 0
    backend = OciBackend(parse_ref(f"oci://{registry.host}/routes"), Access(plain_http=True))
    from tgsp import open_package

    with open_package(pkg) as p:
        digest = backend.repo.resolve(f"pkg-{p.package_id[7:]}")
    kinds = [d.get("artifactType") for d in backend.repo.referrers(digest)]
    assert sorted(kinds) == sorted([artifact.EVIDENCE, artifact.ROUTE_INDEX])


def test_a_moved_package_tag_or_a_replayed_index_is_refused(registry, world, capsys, tmp_path, monkeypatch):
    r, sign = _reg(registry), ["--signing-key", "release"]
    for v in (1, 2):
        assert cli(capsys, "route", "register", world.package(v), *r, *sign)[0] == 0
    assert cli(capsys, "route", "promote", "support", "1", *r, *sign)[0] == 0
    state = tmp_path / "deploy.json"
    assert cli(capsys, "route", "resolve", "support", *r, "--state", state)[0] == 0
    backend = OciBackend(parse_ref(f"oci://{registry.host}/routes"), Access(plain_http=True))
    old_raw, old_media, _ = backend.repo.get_manifest("index-support")
    assert cli(capsys, "route", "promote", "support", "2", *r, *sign)[0] == 0
    assert cli(capsys, "route", "resolve", "support", *r, "--state", state)[0] == 0
    backend.repo.put_manifest(old_raw, old_media, "index-support")  # an attacker re-tags the old index
    code, out, err = cli(capsys, "route", "resolve", "support", *r, "--state", state)
    assert code == 1 and "replayed index" in err
    # a tag alone names nothing: point the package tag production names (v1 in the index now
    # served) at v2's artifact; a consumer with an empty cache catches it
    code, out, err = cli(capsys, "route", "show", "support", *r, "--json")
    by_version = {e["version"]: e["package_id"][7:] for e in json.loads(out)["packages"]}
    v2_raw, media, _ = backend.repo.get_manifest(f"pkg-{by_version[2]}")
    backend.repo.put_manifest(v2_raw, media, f"pkg-{by_version[1]}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "fresh-cache"))
    code, out, err = cli(capsys, "route", "resolve", "support", *r, "--json")
    assert code == 1 and "is not the package the route index names" in err


def test_a_stale_edit_is_a_conflict_and_the_registry_redoes_it(registry, world):
    ref = f"oci://{registry.host}/routes"
    reg = at(ref, world.kr.trust_policy(), access=Access(plain_http=True))
    reg.register(world.package(1), world.signer)
    backend = reg.backend
    raw, token = backend.read_index("support")
    reg.register(world.package(2), world.signer)  # another editor moves the tag
    with pytest.raises(RegistryConflict):
        backend.write_index("support", raw, token)  # a write from the stale base is refused
    # and an edit that started from the stale base is redone on the new index, losing nothing
    calls = {"n": 0}
    real = backend.read_index

    def stale_once(route):
        calls["n"] += 1
        return (raw, token) if calls["n"] == 1 else real(route)

    backend.read_index = stale_once
    reg.register(world.package(3), world.signer)
    backend.read_index = real
    doc = reg.require("support")
    assert [e["version"] for e in doc["packages"]] == [1, 2, 3] and calls["n"] >= 3


def test_racing_registrations_from_separate_machines_lose_no_version(registry, world, tmp_path):
    """Four processes, each with its own cache (so no shared flock: separate machines), register
    two packages each at the same moment; every one must be in the final index."""
    pkgs = [world.package(v) for v in range(1, 9)]
    script = ("import sys; from pathlib import Path; from tgsp.keyring import Keyring; "
              "from runners.state.registry import at; from runners.oci.client import Access; "
              "kr = Keyring(Path(sys.argv[1])); pp = lambda: 'correct horse battery staple'; "
              "reg = at(sys.argv[2], kr.trust_policy(), access=Access(plain_http=True)); "
              "[reg.register(Path(p), kr.signer('release', pp)) for p in sys.argv[3:]]")
    procs = []
    for i in range(4):
        env = {**os.environ, "TGFLOW_CACHE": str(tmp_path / f"machine-{i}"), "PYTHONPATH": str(ROOT)}
        procs.append(subprocess.Popen([sys.executable, "-c", script, str(world.home), f"oci://{registry.host}/race",
                                       *map(str, pkgs[2 * i:2 * i + 2])], env=env, stderr=subprocess.PIPE, text=True))
    for p in procs:
        assert p.wait(180) == 0, p.stderr.read()[-2000:]
    doc = at(f"oci://{registry.host}/race", world.kr.trust_policy(), access=Access(plain_http=True)).require("support")
    assert sorted(e["version"] for e in doc["packages"]) == list(range(1, 9))
    assert doc["version"] == 8 and len(doc["history"]) == 8  # one index version per registration, none lost


def test_a_round_registers_its_candidate_in_an_oci_registry(registry, workspace, monkeypatch, capsys):
    """peft run with output.registry = oci://...: the round's package lands in the OCI route
    registry as candidate (the transport from TGFLOW_REGISTRY_PLAIN_HTTP, as a CronJob sets it)."""
    monkeypatch.setenv("TGFLOW_REGISTRY_PLAIN_HTTP", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(workspace.root / "cache"))
    import runners.stages.context as C

    home = workspace.root / "home"
    real_access = C.os.access  # as in a Kubernetes job: the keyring is a read-only Secret mount
    monkeypatch.setattr(C.os, "access",
                        lambda p, mode, **kw: False if Path(p) == home and mode & os.W_OK else real_access(p, mode, **kw))
    reg = f"oci://{registry.host}/routes"
    spec = workspace.spec(output__registry=reg)
    monkeypatch.chdir(workspace.root)
    code, out, err = cli(capsys, "peft", "run", "--spec", spec, "--json")
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["registered"]["path"].startswith(f"{reg}:pkg-")
    code, out, err = cli(capsys, "route", "resolve", "support", "--alias", "candidate", "--registry", reg,
                         "--plain-http", "--json")
    assert code == 0, err
    assert json.loads(out)["package_id"] == report["package_id"]
    # with the keyring folder read-only, the round pins what it signed in its (durable) state folder
    pins = json.loads((workspace.state / "route-editors.json").read_text())["indexes"]
    assert list(pins) == [f"{reg}#support"]
    assert not (home / "route-editors.json").exists()
