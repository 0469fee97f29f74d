"""The release stage: a registry that cannot be written loses nothing."""

from __future__ import annotations

import json

from runners.state.store import RouteStore

from tests.helpers import cli


def test_an_unwritable_registry_keeps_the_package_and_the_log_line(workspace, capsys):
    spec = workspace.spec(output={"path": "out/adapter.tgsp", "signing_key": "release", "recipients": ["operator"],
                                  "registry": "feeds/reference.jsonl/registry"})  # under a file: cannot be made
    code, _, err = cli(capsys, "peft", "run", "--spec", spec)
    assert code == 5 and "packaged" in err and "not registered" in err and "tgflow route register" in err
    assert (workspace.root / "out" / "adapter.tgsp").is_file()
    log = RouteStore(workspace.state, "support").view()
    assert [r["version"] for r in log.releases()] == [1]
    # the hint's command finishes the job
    code, out, err = cli(capsys, "route", "register", workspace.root / "out" / "adapter.tgsp", "--registry",
                         workspace.root / "registry", "--signing-key", "release", "--json")
    assert code == 0 and json.loads(out)["version"] == 1


def test_a_round_warm_starts_from_a_frozen_index_and_thaws_it(workspace, capsys):
    """Nobody re-signed the index for 40 days: consumers refuse it, but the route's next round
    still reads production from it, and its registration re-signs (thaws) the index."""
    from datetime import datetime, timedelta, timezone

    from runners.state.registry import Registry
    from tgsp.keyring import Keyring

    from tests.helpers import PASS

    spec = workspace.spec()
    assert cli(capsys, "peft", "run", "--spec", spec)[0] == 0
    kr = Keyring(workspace.root / "home")
    past = lambda: datetime.now(timezone.utc) - timedelta(days=40)  # noqa: E731
    Registry(workspace.root / "out" / "registry", kr.trust_policy(), now=past).promote(
        "support", 1, kr.signer("release", lambda: PASS))
    reg = ["--registry", workspace.root / "out" / "registry"]
    code, _, err = cli(capsys, "route", "resolve", "support", *reg)
    assert code == 1 and "frozen" in err
    rows = (workspace.root / "feeds" / "support-tickets.jsonl").read_text().splitlines()
    (workspace.root / "feeds" / "next.jsonl").write_text("\n".join(rows[100:164]) + "\n")
    spec2 = workspace.spec("s2.json", feed={"type": "jsonl", "uri": "feeds/next.jsonl"},
                           policy={"novelty_threshold": 0.0, "min_novel_examples": 8, "forgetting_budget": 10.0,
                                   "eval_fraction": 0.25, "gate": {"max_regression": None}})
    code, out, err = cli(capsys, "peft", "run", "--spec", spec2, "--json")
    assert code == 0, err
    assert json.loads(out)["parent"]["version"] == 1
    code, out, _ = cli(capsys, "route", "resolve", "support", *reg, "--json")
    assert code == 0 and json.loads(out)["version"] == 1  # production is still v1, and the index is live again
