"""Routes that stay alive (issue 30): the index lifetime, refresh, a warning before the freeze,
aliases by name, and a mistyped registry or keyring that is not read as an empty one."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from runners.state.registry import Registry
from tgsp import clock

from tests.helpers import cli, pp
from tests.route.test_registry import reg  # noqa: F401 - the fixture


def _index(reg) -> dict:
    return Registry(reg.dir, reg.kr.trust_policy()).require("support")


def test_a_quiet_route_is_refreshed_before_it_freezes(reg, capsys):  # noqa: F811
    signer = reg.kr.signer("release", pp)
    issued = datetime.now(timezone.utc) - timedelta(days=25)  # 5 of 30 days left: under a quarter
    Registry(reg.dir, reg.kr.trust_policy(), now=lambda: issued).register(reg.package(1), signer, alias="production")
    code, out, err = cli(capsys, "route", "resolve", "support", *reg.args, "--json")
    assert code == 0 and json.loads(out)["index_expiring"] is True
    assert "expires at" in err and "tgflow route refresh support" in err
    before = _index(reg)
    code, out, _ = cli(capsys, "route", "refresh", "support", *reg.args, *reg.sign, "--json")
    after = json.loads(out)
    assert code == 0 and after["index_version"] == before["version"] + 1
    doc = _index(reg)
    assert doc["aliases"] == before["aliases"] and doc["packages"] == before["packages"]
    assert doc["history"] == before["history"]  # nothing moved
    left = clock.parse(doc["expires"]) - datetime.now(timezone.utc)
    assert timedelta(days=29) < left <= timedelta(days=30)
    code, out, err = cli(capsys, "route", "resolve", "support", *reg.args, "--json")
    assert code == 0 and json.loads(out)["index_expiring"] is False and "expires at" not in err


def test_the_lifetime_comes_from_the_flag_the_environment_or_config(reg, capsys, monkeypatch):  # noqa: F811
    assert cli(capsys, "route", "register", reg.package(1), *reg.args, *reg.sign)[0] == 0
    days = lambda: (clock.parse(_index(reg)["expires"]) - clock.parse(_index(reg)["issued"])).days  # noqa: E731
    assert days() == 30
    assert cli(capsys, "route", "refresh", "support", "--days", "90", *reg.args, *reg.sign)[0] == 0
    assert days() == 90
    (reg.root / "home" / "config.toml").write_text("[route]\nindex_days = 7\n")
    assert cli(capsys, "route", "refresh", "support", *reg.args, *reg.sign)[0] == 0
    assert days() == 7
    monkeypatch.setenv("TGFLOW_INDEX_DAYS", "14")  # the environment wins over the file
    assert cli(capsys, "route", "promote", "support", "1", *reg.args, *reg.sign)[0] == 0
    assert days() == 14
    monkeypatch.setenv("TGFLOW_INDEX_DAYS", "0")
    code, _, err = cli(capsys, "route", "refresh", "support", *reg.args, *reg.sign)
    assert code == 2 and "TGFLOW_INDEX_DAYS" in err
    monkeypatch.delenv("TGFLOW_INDEX_DAYS")
    (reg.root / "home" / "config.toml").write_text("[route]\nindex_days = \"seven\"\n")
    code, _, err = cli(capsys, "route", "refresh", "support", *reg.args, *reg.sign)
    assert code == 2 and "index_days must be a whole number" in err


def test_promote_takes_latest_or_an_alias_name(reg, capsys):  # noqa: F811
    for v in (1, 2, 3):
        assert cli(capsys, "route", "register", reg.package(v), *reg.args, *reg.sign)[0] == 0
    code, out, _ = cli(capsys, "route", "promote", "support", "latest", *reg.args, *reg.sign, "--json")
    assert code == 0 and json.loads(out)["version"] == 3
    assert cli(capsys, "route", "promote", "support", "1", "--alias", "staging", *reg.args, *reg.sign)[0] == 0
    code, out, _ = cli(capsys, "route", "promote", "support", "--from", "staging", *reg.args, *reg.sign, "--json")
    assert code == 0 and json.loads(out)["version"] == 1
    code, out, _ = cli(capsys, "route", "promote", "support", "candidate", "--alias", "canary", *reg.args, *reg.sign,
                       "--json")
    assert code == 0 and json.loads(out)["version"] == 3  # register moved candidate to v3
    code, _, err = cli(capsys, "route", "promote", "support", "nightly", *reg.args, *reg.sign)
    assert code == 2 and "no alias 'nightly'" in err and "candidate" in err
    code, _, err = cli(capsys, "route", "promote", "support", "1", "--from", "staging", *reg.args, *reg.sign)
    assert code == 2 and "once" in err


def test_a_mistyped_registry_or_keyring_is_not_an_empty_one(reg, capsys, monkeypatch, tmp_path):  # noqa: F811
    code, out, err = cli(capsys, "route", "list", "--registry", str(tmp_path / "regsitry"))
    assert code == 2 and "registry folder" in err and "does not exist" in err and "no routes" not in out
    assert cli(capsys, "route", "register", reg.package(1), *reg.args, *reg.sign)[0] == 0  # register creates it
    monkeypatch.setenv("TGFLOW_HOME", str(tmp_path / "hmoe"))
    code, _, err = cli(capsys, "route", "list", *reg.args)
    assert code == 2 and "keyring folder" in err and "hmoe" in err


def test_refresh_never_revives_an_expired_index_unattended(reg, capsys):  # noqa: F811
    """A restored old index (a replay) must not come back to life on the next scheduled refresh."""
    signer = reg.kr.signer("release", pp)
    old = datetime.now(timezone.utc) - timedelta(days=40)
    Registry(reg.dir, reg.kr.trust_policy(), now=lambda: old).register(reg.package(1), signer, alias="production")
    before = (reg.dir / "routes/support/index.json").read_bytes()
    code, _, err = cli(capsys, "route", "refresh", "support", *reg.args, *reg.sign)
    assert code == 1 and "expired at" in err and "--revive" in err
    assert (reg.dir / "routes/support/index.json").read_bytes() == before  # nothing re-signed
    assert cli(capsys, "route", "refresh", "support", "--revive", *reg.args, *reg.sign)[0] == 0
    assert cli(capsys, "route", "resolve", "support", *reg.args)[0] == 0


def test_refresh_of_an_unknown_route_leaves_nothing_and_bad_lifetimes_are_bad_input(reg, capsys, monkeypatch):  # noqa: F811
    assert cli(capsys, "route", "register", reg.package(1), *reg.args, *reg.sign)[0] == 0
    code, _, err = cli(capsys, "route", "refresh", "nosuch", *reg.args, *reg.sign)
    assert code == 2 and "no index" in err and not (reg.dir / "routes" / "nosuch").exists()
    for bad in ("²", "9" * 5000, "-3", "30.5"):
        monkeypatch.setenv("TGFLOW_INDEX_DAYS", bad)
        code, _, err = cli(capsys, "route", "refresh", "support", *reg.args, *reg.sign)
        assert code == 2 and "TGFLOW_INDEX_DAYS" in err, (bad, err)
        assert cli(capsys, "route", "resolve", "support", "--alias", "candidate", *reg.args)[0] == 0  # no lifetime read
