"""The release stage: a registry that cannot be written loses nothing."""

from __future__ import annotations

import json

from runners.store import RouteStore

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
