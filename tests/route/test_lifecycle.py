"""A route's life on the shipped tiny-base, through the real CLI: round 1, promote,
round 2 warm-started from it, novelty that tells new from seen, champion/challenger,
promote, roll back, resolve, and peft generate. Real training on 2 CPU cores (~40 s)."""

from __future__ import annotations

import json
import random
import shutil
import sys
from pathlib import Path

import pytest

from tests.helpers import PASS, cli

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import make_tiny_base as corpus  # noqa: E402  (the generators that made the shipped feeds)


@pytest.fixture(scope="module")
def route(tmp_path_factory):
    """Round 1 of the shipped example, packaged and promoted to production."""
    root = tmp_path_factory.mktemp("route")
    shutil.copytree(ROOT / "examples", root / "examples", ignore=shutil.ignore_patterns("demo-adapter"))
    env = pytest.MonkeyPatch()
    env.setenv("TGFLOW_HOME", str(root / "home"))
    env.setenv("TGFLOW_PASSPHRASE", PASS)
    env.chdir(root)
    from tgflow_cli.main import main

    assert main(["key", "generate", "release"]) == 0 and main(["key", "generate", "operator", "--type", "recipient"]) == 0
    assert main(["peft", "run", "--spec", "examples/run_spec.json"]) == 0
    assert main(["route", "promote", "support", "1", "--registry", "demo-out/registry", "--signing-key", "release"]) == 0
    yield root
    env.undo()


@pytest.fixture(scope="module")
def round2(route):
    """Round 2 (examples/run_spec_2.json) on top of `route`: its --json report. A fixture, not a test,
    so every test that needs version 2 has it whichever worker and order it runs in."""
    import io
    from contextlib import redirect_stdout

    from tgflow_cli.main import main

    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["peft", "run", "--spec", "examples/run_spec_2.json", "--json"]) == 0
    return json.loads(buf.getvalue().strip().splitlines()[-1])


def _nothing():
    import contextlib

    return contextlib.nullcontext()


def _release(root: Path, version: int = 1):
    from runners.learn import adapters
    from runners.state.registry import Registry, find
    from tgsp.keyring import Keyring

    kr = Keyring(root / "home")
    reg = Registry(root / "demo-out/registry", kr.trust_policy())
    pkg = reg.route_dir("support") / find(reg.require("support"), version)["file"]
    return adapters.read_release(pkg, kr.trust_policy(), kr.identities("operator", lambda: PASS))


def test_novelty_tells_new_topics_from_reworded_seen_tickets(route):
    """Three groups under the route's production adapter (round 1):
    tickets with resolutions it never learned pass, reworded seen tickets do not,
    and near-duplicates within one feed are caught."""
    from runners.learn import adapters, model as model_mod, novelty
    from runners.learn.batches import tokenize
    from runners.learn.evaluate import example_losses
    from runners.data.feeds import Example

    tok, model = model_mod.load(route / "examples/tiny-base", model_mod.pick_device("fp32"))
    model = adapters.attach(model, _release(route), "parent")
    from runners.data.neardup import near_key

    def rows(make, tag: str) -> list[Example]:  # 24 distinct tickets (no two equal apart from the number)
        out, keys, i = [], set(), 0
        while len(out) < 24:
            r = make(random.Random(f"{tag}-{i}"))
            e, i = Example(r["prompt"], r["completion"]), i + 1
            if near_key(e) not in keys:
                keys.add(near_key(e))
                out.append(e)
        return out

    new, reworded = rows(corpus.new_ticket, "t-new"), rows(corpus.reworded_ticket, "t-rew")
    twins = [Example(e.prompt.replace("Ticket #", "Ticket #9"), e.target) for e in new[:6]]  # same ticket, other number
    feed = new + reworded + twins
    losses = example_losses(model, tok, tokenize(tok, feed, 96), "cpu")
    result = novelty.score(feed, losses, novelty.Seen(frozenset(), frozenset()), 0.5, measure="loss")
    scores = result.scores
    assert min(scores[:24]) > 0.6, "every new-topic ticket passes (threshold 0.5)"
    assert max(scores[24:48]) < 0.35, "no reworded seen ticket passes"
    assert min(scores[:24]) - max(scores[24:48]) > 0.3, "by a wide margin"
    assert result.near_duplicates == 6 and all(s == 0.0 for s in scores[48:])
    assert set(result.novel) == set(range(24))
    # exact match in one teacher-forced pass is greedy generation's answer, here and on the base model
    from runners.learn import metrics

    tickets = [Example(corpus.ticket(random.Random(f"em-{i}"))["prompt"], corpus.ticket(random.Random(f"em-{i}"))["completion"])
               for i in range(16)] + new[:8]
    for ctx in (model.disable_adapter(), _nothing()):
        with ctx:
            fast = metrics.exact_match(model, tok, tickets, "cpu", 96)
            assert fast == metrics.generated_exact_match(model, tok, tickets, "cpu", 96)
    assert fast == 16 / 24  # the adapter answers every round-1 ticket and none of the new ones


def test_round_two_continues_keeps_and_learns(route, round2, capsys):
    report = round2
    first = _release(route)
    assert report["version"] == 2 and report["parent"]["package_id"] == first.package_id
    from tgsp.package import open_package

    with open_package(report["package"]) as p:
        events = {e["type"]: e["data"] for e in p.evidence}
        deps = p.provenance["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert events["tgflow.inputs"]["parent"]["package_id"] == first.package_id  # lineage back to the base
    assert events["tgflow.training"]["init"] == "last-release"
    assert any(d["uri"] == "tgflow:parent/support@1" for d in deps)
    with open_package(report["package"]) as p:  # signed, and readable by anyone: no path of this machine (issue 26)
        signed = json.dumps([p.manifest, p.evidence, p.provenance])
    assert str(route.resolve()) not in signed and "tgflow:reference/jsonl:" in signed
    # the lineage that inspect and report show is the recorded one (issue 30: it said "base model")
    from runners.state.registry import Registry, find
    from tgsp.keyring import Keyring

    reg = Registry(route / "demo-out/registry", Keyring(route / "home").trust_policy())
    packages = {v: reg.route_dir("support") / find(reg.require("support"), v)["file"] for v in (1, 2)}
    code, out, _ = cli(capsys, "tgsp", "inspect", str(packages[2]))
    assert code == 0 and f"parent adapter: warm-started from {first.package_id} (version 1, production)" in out
    code, out, _ = cli(capsys, "tgsp", "inspect", str(packages[1]))
    assert code == 0 and "parent adapter: none: trained from the base model" in out
    nov = report["novelty"]
    assert nov["novel"] < nov["examples"] - 60, "reworded round-1 tickets are not novel"
    ev, forget = report["evaluation"], report["forgetting"]
    # keeps round 1's skill: round 1's held-out tickets, before and after
    kept = forget["earlier_heldout"]["1"]
    assert kept["before"]["exact_match"] >= 0.95 and kept["after"]["exact_match"] >= 0.95
    # learns round 2's: on the mixed eval set it beats both the base model and round 1
    assert ev["candidate"]["exact_match"] >= ev["previous_release"]["exact_match"] + 0.25
    assert ev["candidate"]["exact_match"] > ev["base"]["exact_match"] + 0.5
    assert forget["against"] == "previous release" and forget["passed"]


def test_champion_challenger_refuses_a_worse_adapter(route, capsys):
    """Round 2 without replay forgets round 1's resolutions: the gate (no regression against
    production on the same eval set) refuses it, whatever the loss says."""
    spec = json.loads((route / "examples/run_spec_2.json").read_text())
    spec["policy"].update(replay_fraction=0.0, forgetting_budget=100.0)
    spec["training"]["steps"] = 30
    spec["output"].update(path="../demo-out/no-replay.tgsp", state_dir=str(route / "demo-out/.state-no-replay"))
    (route / "examples/no_replay.json").write_text(json.dumps(spec))
    code, out, err = cli(capsys, "peft", "run", "--spec", "examples/no_replay.json", "--json")
    assert code == 12 and "against the production adapter" in err, err
    assert "hint: it is worse than production on the eval set: try policy.replay_fraction" in err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["evaluation"]["eval_loss_after"] < report["evaluation"]["eval_loss_before"]  # the loss improved
    assert not (route / "demo-out/no-replay.tgsp").exists()


def test_promote_roll_back_resolve_and_generate(route, round2, capsys):
    reg = ["--registry", "demo-out/registry"]
    sign = ["--signing-key", "release"]
    state = route / "consumer.json"
    code, out, _ = cli(capsys, "route", "resolve", "support", *reg, "--state", state, "--json")
    assert code == 0 and json.loads(out)["version"] == 1
    assert cli(capsys, "route", "promote", "support", "2", *reg, *sign)[0] == 0
    newer = (route / "demo-out/registry/routes/support/index.json").read_bytes()
    code, out, _ = cli(capsys, "route", "resolve", "support", *reg, "--state", state, "--json")
    assert code == 0 and json.loads(out)["version"] == 2
    older = newer
    assert cli(capsys, "route", "rollback", "support", *reg, *sign)[0] == 0
    code, out, _ = cli(capsys, "route", "resolve", "support", *reg, "--state", state, "--json")
    resolved = json.loads(out)
    assert code == 0 and resolved["version"] == 1 and resolved["package_id"] == _release(route).package_id
    latest = (route / "demo-out/registry/routes/support/index.json").read_bytes()
    (route / "demo-out/registry/routes/support/index.json").write_bytes(older)  # replay the promote-2 index
    code, _, err = cli(capsys, "route", "resolve", "support", *reg, "--state", state)
    assert code == 1 and "replayed" in err
    (route / "demo-out/registry/routes/support/index.json").write_bytes(latest)
    ticket = corpus.ticket(random.Random("generate-1"))
    code, out, err = cli(capsys, "peft", "generate", "--package", resolved["path"], "--identity", "operator",
                         "--prompt", ticket["prompt"], "--against", "base", "--max-new-tokens", "14", "--json",
                         "--base-model", "examples/tiny-base")
    assert code == 0, err
    answer = json.loads(out)
    assert answer["adapter"].strip() == ticket["completion"].strip() and "base" in answer
    code, out, _ = cli(capsys, "peft", "generate", "--package", resolved["path"], "--identity", "operator",
                       "--prompt", ticket["prompt"], "--against", "base", "--max-new-tokens", "14",
                       "--base-model", "examples/tiny-base")
    assert code == 0 and "base model:" in out and "adapter v1:" in out
    code, out, err = cli(capsys, "peft", "generate", "--package", resolved["path"], "--identity", "operator",
                         "--prompt", ticket["prompt"], "--max-new-tokens", "2", "--he", "--json",
                         "--base-model", "examples/tiny-base")
    assert code == 0, err
    he = json.loads(out)["he"]  # the delta under CKKS gives the plaintext adapter's tokens
    assert he["equal_to_plaintext"] and he["max_delta_error"] < 1e-6 and he["experimental"]
    assert he["module_calls"] == 2 * len(he["modules"]) == 16 and "EXPERIMENTAL" in err
    sampled = ["peft", "generate", "--package", resolved["path"], "--identity", "operator", "--prompt", ticket["prompt"],
               "--max-new-tokens", "14", "--base-model", "examples/tiny-base", "--temperature", "1.3", "--top-p", "0.95",
               "--num-samples", "3", "--seed", "5", "--stop", "\\n", "--json"]
    runs = [cli(capsys, *sampled) for _ in range(2)]
    assert all(code == 0 for code, _, _ in runs)
    first, again = (json.loads(out) for _, out, _ in runs)
    assert first["samples"]["adapter"] == again["samples"]["adapter"] and len(first["samples"]["adapter"]) == 3
    assert first["sampling"] == {**first["sampling"], "seed": 5, "temperature": 1.3, "top_p": 0.95, "mode": "sample"}
    assert all("\n" not in s for s in first["samples"]["adapter"])


def test_a_regressed_evaluation_blocks_promotion(route, round2, capsys):
    """route eval records both adapters' task metrics; promote refuses a version that regressed."""
    reg = ["--registry", "demo-out/registry"]
    sign = ["--signing-key", "release"]
    code, out, err = cli(capsys, "route", "eval", "support", "--candidate", "1", "--against", "2", "--eval",
                         "examples/feeds/support-eval-2.jsonl", "--identity", "operator", "--base-model",
                         "examples/tiny-base", *reg, *sign, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["against"]["regressed"] and result["against"]["regression"]["exact_match"] > 0.2
    code, _, err = cli(capsys, "route", "promote", "support", "1", "--alias", "staging", *reg, *sign)
    assert code == 2 and "regressed" in err and "--force" in err
    assert cli(capsys, "route", "promote", "support", "1", "--alias", "staging", "--force", *reg, *sign)[0] == 0
    code, out, _ = cli(capsys, "route", "show", "support", *reg, "--json")
    doc = json.loads(out)
    assert doc["aliases"]["staging"]["version"] == 1 and doc["aliases"]["production"]["version"] == 1
    code, out, _ = cli(capsys, "route", "list", *reg, "--json")
    assert json.loads(out)["routes"][0]["aliases"] == {"candidate": 2, "production": 1, "staging": 1}


def test_every_state_file_carries_a_format_tag(route):
    state = route / "demo-out/.tgflow-state/support"
    for p in state.rglob("*.json"):
        assert json.loads(p.read_text()).get("format", "").startswith("tgflow"), p
    names = {p.name for p in state.iterdir()}
    assert {"store.json", "log.jsonl", "log.head.json", "lock", "novelty", "retained", "rounds"} <= names


def test_route_report_page(route, round2, capsys, tmp_path):
    """tgsp report --route: the route's history on one page, every version verified (issue 30)."""
    out = tmp_path / "route.html"
    code, said, err = cli(capsys, "tgsp", "report", "--route", "support", "--registry", "demo-out/registry", "-o", out)
    assert code == 0 and "(2 versions, all verified)" in said, err
    page = out.read_text()
    assert "<script" not in page and 'id="metrics-over-time"' in page and page.count("<circle") == 4  # 2 versions x 2
    assert ">v1</td>" in page and ">v2</td>" in page and page.count("<span class=ok>verified</span>") == 2
    assert "register" in page and "no version of this route was trained with differential privacy" in page
    code, _, err = cli(capsys, "tgsp", "report", "pkg.tgsp", "--route", "support", "-o", tmp_path / "x.html")
    assert code == 2 and "one of them" in err
