"""Federated rounds end to end, through the CLI: three sites on the shipped tiny base model
each write an update; the aggregator verifies, merges and releases; every kind of bad
update is refused with its reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tgsp
from tests.helpers import PASS
from tgflow_cli.main import main

from .conftest import EXAMPLES, ROUND, SITES


def aggregate(fed, capsys, name: str, updates: list[Path], *flags: str, **spec_over) -> tuple[int, dict]:
    spec = fed.spec(name, **spec_over)
    capsys.readouterr()
    code = main(["fed", "aggregate", *map(str, updates), "--spec", str(spec), "--json", *flags])
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def site_adapter_metrics(fed, update: Path) -> dict:
    """An update as the site's own adapter (start + its decoded delta) on the union eval set."""
    from peft import set_peft_model_state_dict
    from safetensors.numpy import load

    from runners.data import feeds
    from runners.learn import metrics, model as model_mod
    from runners.stages import site
    from runners.fed import start, updates
    from runners.spec import FeedSpec, LoraSpec
    from runners.learn.train import add_lora

    kr = tgsp.Keyring(fed.root / "home")
    from tgsp.unpack import read_payload

    report, files = read_payload(update, kr.trust_policy(kind="update"),
                                             identities=kr.identities("aggregator", lambda: PASS))
    tok, model = model_mod.load(EXAMPLES / "tiny-base", model_mod.pick_device("fp32"))
    model = add_lora(model, LoraSpec(r=8, alpha=16, target_modules=["q_proj", "v_proj"]), 7)
    start.fresh_init(model, 7)
    s0 = start.lora_state(model)
    names = start.modules(s0)
    parts = [load(files[updates.delta_file(k)]) for k in range(len(names))]
    set_peft_model_state_dict(model, site.decoded_state(s0, parts, names, updates.codec_of(report.manifest["federation"])))
    ev = feeds.load_feed(FeedSpec(type="jsonl", uri=str(EXAMPLES / "feeds/fed/eval.jsonl")), EXAMPLES).examples
    return metrics.measure(model, tok, ev, "cpu", 96)


def test_three_sites_aggregate_into_a_candidate_that_beats_every_site(fed, capsys):
    code, report = aggregate(fed, capsys, "agg", [fed.updates[s] for s in SITES], "--quorum", "2")
    assert code == 0, report
    assert report["outcome"] == "packaged" and report["evaluation"]["passed"]
    agg = report["training"]["aggregation"]
    assert sorted(a["site"] for a in agg["accepted"]) == list(SITES) and agg["refused"] == []
    assert abs(sum(a["weight"] for a in agg["accepted"]) - 1) < 1e-6
    mine = report["evaluation"]["candidate"]
    for s in SITES:  # on the union of the sites' tasks, the aggregate is better than any one site's adapter
        theirs = site_adapter_metrics(fed, fed.updates[s])
        assert mine["exact_match"] > theirs["exact_match"], (s, mine, theirs)
        assert mine["choice_accuracy"] > theirs["choice_accuracy"], (s, mine, theirs)
        assert mine["loss"] < theirs["loss"], (s, mine, theirs)
    # The release names every contributing update in its evidence, provenance and registry entry.
    pkg = Path(report["package"])
    kr = tgsp.Keyring(fed.root / "home")
    assert tgsp.verify(pkg, kr.trust_policy(kind="adapter")).ok
    with tgsp.open_package(pkg) as p:
        events = {e["type"]: e["data"] for e in p.evidence}
        deps = {d["uri"] for d in p.provenance["predicate"]["buildDefinition"]["resolvedDependencies"]}
    assert {a["update"] for a in events["tgflow.federation.aggregate"]["accepted"]} == {
        tgsp.verify(fed.updates[s], kr.trust_policy()).package_id for s in SITES}
    assert {f"tgflow:update/{s}@{ROUND}" for s in SITES} <= deps
    assert events["tgflow.privacy"]["mode"] == "federated"
    assert [x["mode"] for x in events["tgflow.privacy"]["sites"]] == ["off"] * 3
    from runners.state.registry import Registry

    doc, _ = Registry(fed.root / "out/agg/registry", kr.trust_policy()).load("support")
    assert doc["aliases"]["candidate"]["package_id"] == report["package_id"]


def _flip(path: Path, at: int) -> Path:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    return path


def test_each_bad_update_is_refused_with_its_reason(fed, capsys, copy_of, tmp_path):
    other_base = tmp_path / "other-base"
    import shutil

    shutil.copytree(EXAMPLES / "tiny-base", other_base)
    cfg = json.loads((other_base / "config.json").read_text())
    (other_base / "config.json").write_text(json.dumps({**cfg, "tgflow_note": "another model"}))
    bad = {
        "round": fed.site("b-next", "site-b", steps=2, federation={"round": "2026-12-02"}),
        "base": fed.site("c-base", "site-c", steps=2, base_model_ref=str(other_base)),
        "stranger": fed.site("stranger", "stranger", feed="site-a", steps=2),
        "twice": fed.site("a-again", "site-a", steps=2),
        "tampered": _flip(copy_of(fed.updates["site-b"], tmp_path / "tampered.tgsp"), 2048),
    }
    code, report = aggregate(fed, capsys, "refusals", [fed.updates[s] for s in SITES] + list(bad.values()),
                             "--quorum", "1")
    assert code == 0, report
    agg = report["training"]["aggregation"]
    assert sorted(a["site"] for a in agg["accepted"]) == ["site-b", "site-c"]
    why = {Path(r["path"]): r["reason"] for r in agg["refused"]}
    assert "round differs" in why[bad["round"]]
    assert "base model differs" in why[bad["base"]]
    assert "signatures check failed" in why[bad["stranger"]] and "trusted" in why[bad["stranger"]]
    assert "sent 2 different updates" in why[bad["twice"]] and "sent 2 different updates" in why[fed.updates["site-a"]]
    assert "check failed" in why[bad["tampered"]]
    assert len(why) == 6


def test_a_missed_quorum_exits_14_and_writes_nothing(fed, capsys, copy_of, tmp_path):
    tampered = _flip(copy_of(fed.updates["site-c"], tmp_path / "t.tgsp"), 4096)
    code, report = aggregate(fed, capsys, "short", [fed.updates["site-a"], tampered, tmp_path / "missing.tgsp"],
                             "--quorum", "2")
    assert code == 14 and report["outcome"] == "quorum-not-met"
    assert report["error"]["exit_code"] == 14 and "1 valid updates, need 2" in report["error"]["message"]
    assert {Path(r["path"]).name: r["reason"] for r in report["refused"]}["missing.tgsp"] == "file not found"
    assert not (fed.root / "out" / "short").exists()  # no package, no route state, no registry


def test_a_replayed_update_is_refused(fed, capsys):
    code, _ = aggregate(fed, capsys, "replay", [fed.updates["site-a"], fed.updates["site-b"]], "--quorum", "2")
    assert code == 0
    code, report = aggregate(fed, capsys, "replay", [fed.updates["site-a"], fed.updates["site-c"]], "--quorum", "2")
    assert code == 14
    why = {Path(r["path"]): r["reason"] for r in report["refused"]}
    assert "already aggregated" in why[fed.updates["site-a"]] and "replay" in why[fed.updates["site-a"]]


def _site_states(fed, names_of_updates) -> list[tuple[float, dict]]:
    from safetensors.numpy import load

    from runners.stages import site
    from runners.fed import updates
    from tgsp.unpack import read_payload

    kr = tgsp.Keyring(fed.root / "home")
    out = []
    for update, start in names_of_updates:
        rep, files = read_payload(update, kr.trust_policy(kind="update"), identities=kr.identities("aggregator", lambda: PASS))
        names = sorted({k.rsplit(".lora_", 1)[0] for k in start})
        parts = [load(files[updates.delta_file(k)]) for k in range(len(names))]
        out.append((rep.manifest["federation"]["examples"],
                    site.decoded_state(start, parts, names, updates.codec_of(rep.manifest["federation"]))))
    return out


def _fresh_start() -> dict:
    from runners.learn import model as model_mod
    from runners.fed import start
    from runners.spec import LoraSpec
    from runners.learn.train import add_lora

    _, model = model_mod.load(EXAMPLES / "tiny-base", model_mod.pick_device("fp32"))
    model = add_lora(model, LoraSpec(r=8, alpha=16, target_modules=["q_proj", "v_proj"]), 7)
    start.fresh_init(model, 7)
    return start.lora_state(model)


def _released(fed, report) -> dict:
    from safetensors.torch import load

    from runners.learn.adapters import read_release

    kr = tgsp.Keyring(fed.root / "home")
    rel = read_release(Path(report["package"]), kr.trust_policy(kind="adapter"), kr.identities("operator", lambda: PASS))
    return rel.config, load(rel.weights)


def test_exact_at_full_rank_equals_the_weighted_sum_of_products(fed, capsys):
    code, report = aggregate(fed, capsys, "fullrank", [fed.updates[s] for s in SITES], "--quorum", "3",
                             "--rank", "24")
    assert code == 0, report
    assert report["training"]["aggregation"]["truncation_error_max"] < 1e-6
    config, merged = _released(fed, report)
    assert config["r"] == 24 and config["lora_alpha"] == 48  # alpha / r is the route's scaling
    start = _fresh_start()
    sites = _site_states(fed, [(fed.updates[s], start) for s in SITES])
    total = sum(n for n, _ in sites)
    for a_key in (k for k in start if k.endswith(".lora_A.weight")):
        b_key = a_key.replace("lora_A", "lora_B")
        want = sum((n / total) * (st[b_key].double() @ st[a_key].double()) for n, st in sites)
        got = merged[b_key].double() @ merged[a_key].double()
        assert float((got - want).abs().max()) < 1e-5, a_key


def test_ffa_sites_train_only_b_and_the_mean_of_b_is_exact(fed, capsys):
    ffa = {"method": "ffa"}
    ups = [fed.site(f"ffa-{s}", s, steps=10, federation=ffa) for s in ("site-a", "site-b")]
    code, report = aggregate(fed, capsys, "ffa", ups, "--quorum", "2", "--method", "ffa", federation=ffa)
    assert code == 0, report
    config, merged = _released(fed, report)
    start = _fresh_start()
    sites = _site_states(fed, [(u, start) for u in ups])
    total = sum(n for n, _ in sites)
    for key, s0 in start.items():
        if key.endswith(".lora_A.weight"):
            assert all(float((st[key] - s0).abs().max()) == 0.0 for _, st in sites)  # A stayed frozen
            assert float((merged[key] - s0).abs().max()) < 1e-7
        else:
            want = sum((n / total) * st[key].double() for n, st in sites)
            assert float((merged[key].double() - want).abs().max()) < 1e-6
    # An ffa update is not accepted by an exact aggregation (and the reverse): the method is part of the match.
    code, report = aggregate(fed, capsys, "ffa-as-exact", ups, "--quorum", "1", "--method", "exact", federation=ffa)
    assert code == 14 and all("method differs" in r["reason"] for r in report["refused"])


def test_a_dp_site_sends_no_private_count_and_the_aggregate_states_per_site_privacy(fed, capsys):
    dp = {"mode": "dp", "dp": {"max_grad_norm": 1.0, "noise_multiplier": 1.0, "target_delta": 1e-4}}
    update = fed.site("dp-site", "site-c", steps=4, privacy=dp)
    man = tgsp.verify(update, tgsp.Keyring(fed.root / "home").trust_policy()).manifest
    assert man["federation"]["examples"] is None and man["federation"]["weight_basis"] == "none"
    assert man["privacy"]["mode"] == "dp" and man["privacy"]["epsilon"] > 0
    code, report = aggregate(fed, capsys, "dp-by-examples", [fed.updates["site-a"], update], "--quorum", "2")
    assert code == 14 and "no public example count" in report["refused"][0]["reason"]
    code, report = aggregate(fed, capsys, "dp-equal", [fed.updates["site-a"], update], "--quorum", "2",
                             "--weights", "equal")
    assert code == 0, report
    assert [a["weight"] for a in report["training"]["aggregation"]["accepted"]] == [0.5, 0.5]
    sites = {s["site"]: s for s in report["privacy"]["sites"]}
    assert sites["site-c"]["mode"] == "dp" and sites["site-c"]["epsilon"] == man["privacy"]["epsilon"]
    assert sites["site-a"]["mode"] == "off" and "parallel composition" in report["privacy"]["guarantee"]
    declared = fed.site("dp-public", "site-b", steps=2, privacy=dp, federation={"public_examples": 100})
    fed_ = tgsp.verify(declared, tgsp.Keyring(fed.root / "home").trust_policy()).manifest["federation"]
    assert fed_["examples"] == 100 and fed_["weight_basis"] == "public"


def test_top_k_with_error_feedback_is_gated_on_the_held_out_loss(fed, capsys):
    kr = tgsp.Keyring(fed.root / "home")
    loose = fed.site("topk-loose", "site-a", federation={"compression": {"topk": 0.1, "max_loss_increase": 10.0}})
    strict = fed.site("topk-strict", "site-b", federation={"compression": {"topk": 0.01, "max_loss_increase": 0.0}})
    sent = {}
    for name, update in (("loose", loose), ("strict", strict)):
        f = tgsp.verify(update, kr.trust_policy()).manifest["federation"]
        sent[name] = f
    assert sent["loose"]["compression"]["topk"] == 0.1  # the sparse update passed its gate and was sent
    assert sent["loose"]["bytes"]["encoded"] * 2 < sent["strict"]["bytes"]["encoded"]
    assert sent["strict"]["compression"]["topk"] is None  # 1% of values lost held-out loss: the dense one went
    residual = fed.root / "out/topk-loose/.tgflow-state/support/federation/residual.sealed"
    assert residual.exists() and not (fed.root / "out/topk-strict/.tgflow-state/support/federation/residual.sealed").exists()
    code, report = aggregate(fed, capsys, "topk", [loose, strict], "--quorum", "2")
    assert code == 0 and report["evaluation"]["passed"], report  # a sparse and a dense update merge together
    assert len(report["training"]["aggregation"]["accepted"]) == 2


def test_bad_set_ups_get_one_clear_error(fed, capsys, tmp_path):
    ups = [fed.updates["site-a"], fed.updates["site-b"]]
    spec = fed.spec("setups")
    cases = [
        (["--route", "other"], 2, "--route other differs"),
        (["--round", "1999"], 2, "--round 1999 differs"),
        (["--rank", "4", "--method", "ffa"], 2, "--rank applies to --method exact"),
        (["--site", "no-such-key"], 3, "no-such-key"),
    ]
    for flags, want, text in cases:
        capsys.readouterr()
        assert main(["fed", "aggregate", *map(str, ups), "--spec", str(spec), "--quorum", "2", *flags]) == want, flags
        assert text in capsys.readouterr().err
    no_eval = fed.spec("no-eval", eval=None)
    assert main(["fed", "aggregate", *map(str, ups), "--spec", str(no_eval), "--quorum", "2"]) == 2
    assert "eval" in capsys.readouterr().err
    not_fed = fed.spec("not-fed", federation=None)
    raw = json.loads(not_fed.read_text())
    raw.pop("federation")
    not_fed.write_text(json.dumps(raw))
    assert main(["fed", "aggregate", *map(str, ups), "--spec", str(not_fed), "--quorum", "2"]) == 2
    assert not (fed.root / "out" / "setups").exists()
    # A site spec without a feed, and top-k under dp, are refused before anything runs.
    assert main(["peft", "run", "--spec", str(fed.spec("no-feed"))]) == 2
    assert "needs a training feed" in capsys.readouterr().err
    dp = {"mode": "dp", "dp": {"max_grad_norm": 1.0, "noise_multiplier": 1.0, "target_delta": 1e-4}}
    spec = fed.spec("dp-topk", privacy=dp, federation={"compression": {"topk": 0.1}},
                    feed={"type": "jsonl", "uri": str(EXAMPLES / "feeds/fed/site-a.jsonl")})
    assert main(["peft", "run", "--spec", str(spec)]) == 2
    assert "topk is not available with privacy.mode" in capsys.readouterr().err


def test_the_aggregator_needs_its_private_key_and_prints_hostile_names_as_text(fed, capsys, tmp_path, monkeypatch):
    import shutil

    # A keyring with the site keys and release key but no aggregator private key: refused, exit 3.
    home = tmp_path / "agg-home"
    shutil.copytree(fed.root / "home", home)
    for f in (home / "keys").glob("aggregator*"):
        f.unlink()
    monkeypatch.setenv("TGFLOW_HOME", str(home))
    spec = fed.spec("custody")
    assert main(["fed", "aggregate", str(fed.updates["site-a"]), "--spec", str(spec), "--quorum", "1"]) == 3
    assert "no private key for federation.aggregator" in capsys.readouterr().err
    monkeypatch.setenv("TGFLOW_HOME", str(fed.root / "home"))
    hostile = tmp_path / "\x1b[31mred\x1b[0m.tgsp"
    code = main(["fed", "aggregate", str(fed.updates["site-a"]), str(hostile), "--spec", str(spec), "--quorum", "2"])
    out = capsys.readouterr()
    assert code == 14 and "\x1b" not in out.out + out.err and "red" in out.out


def test_the_next_round_starts_every_site_from_the_promoted_aggregate(fed, capsys):
    code, first = aggregate(fed, capsys, "warm", [fed.updates[s] for s in SITES], "--quorum", "3")
    assert code == 0
    registry = fed.root / "out/warm/registry"
    assert main(["route", "promote", "support", "1", "--registry", str(registry), "--signing-key", "release"]) == 0
    nxt = {"round": "2026-12-02"}
    ups = []
    for site, feed in (("site-a", "site-b"), ("site-b", "site-c")):  # new tickets for each site
        ups.append(fed.site(f"warm-{site}", site, feed=feed, federation=nxt, policy={
            "novelty_threshold": 0.0, "min_novel_examples": 8, "forgetting_budget": 0.5},
                            output={"path": f"out/warm-{site}/update.tgsp", "signing_key": site,
                                    "recipients": ["operator"], "registry": str(registry)}))
        start = tgsp.verify(ups[-1], tgsp.Keyring(fed.root / "home").trust_policy()).manifest["federation"]["start"]
        assert start["package_id"] == first["package_id"] and start["init"] == "release"
    # A site may name its start by package id (federation.start); one its registry lacks is refused.
    named = {**nxt, "start": first["package_id"]}
    site_out = {"path": "out/warm-named/update.tgsp", "signing_key": "site-c", "recipients": ["operator"],
                "registry": str(registry)}
    pinned = fed.site("warm-named", "site-c", steps=2, federation=named, output=site_out, policy={
        "novelty_threshold": 0.0, "min_novel_examples": 8, "forgetting_budget": 0.5})
    kr = tgsp.Keyring(fed.root / "home")
    assert tgsp.verify(pinned, kr.trust_policy()).manifest["federation"]["start"]["package_id"] == first["package_id"]
    bogus = fed.spec("warm-bogus", federation={**nxt, "start": "sha256:" + "0" * 64}, output=site_out,
                     feed={"type": "jsonl", "uri": str(EXAMPLES / "feeds/fed/site-a.jsonl")})
    capsys.readouterr()
    assert main(["peft", "run", "--spec", str(bogus)]) == 2
    assert "not in route support's registry" in capsys.readouterr().err
    code, report = aggregate(fed, capsys, "warm", ups + [fed.updates["site-c"]], "--quorum", "2", federation=nxt)
    assert code == 0, report
    assert report["parent"]["package_id"] == first["package_id"] and report["version"] == 2
    ev = report["evaluation"]
    assert ev["candidate"]["exact_match"] > ev["previous_release"]["exact_match"]  # the gate's champion/challenger
    refused = report["training"]["aggregation"]["refused"]
    assert len(refused) == 1 and "round differs" in refused[0]["reason"]


@pytest.mark.parametrize("stage", ["screening", "merging"])
def test_sigterm_during_an_aggregation_exits_143_and_writes_nothing(fed, tmp_path, stage):
    import os
    import signal
    import subprocess

    from tests.edges.test_signals import _has_open, _live_sigint, _wait_for
    from tests.helpers import tgflow_exe

    name = f"sigterm-{stage}"
    spec = fed.spec(name)
    env = {**os.environ, "TGFLOW_HOME": str(fed.root / "home"), "TGFLOW_PASSPHRASE": PASS, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(tgflow_exe() + ["fed", "aggregate", *map(str, (fed.updates[s] for s in SITES)), "--spec",
                                            str(spec), "--quorum", "3"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, preexec_fn=_live_sigint)
    # screening: verify has the first update open; merging: the route's lock is held (the state folder exists)
    lock = fed.root / "out" / name / ".tgflow-state" / "support" / "lock"
    trigger = (lambda: _has_open(proc.pid, fed.updates[SITES[0]])) if stage == "screening" else lock.exists
    assert _wait_for(trigger, timeout=120)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert not (fed.root / "out" / name / "support.tgsp").exists()
    log = fed.root / "out" / name / ".tgflow-state" / "support" / "log.jsonl"
    assert not log.exists() or b"tgflow.route.round" not in log.read_bytes()


def test_peft_validate_checks_the_federation_keys(fed, capsys):
    site = fed.spec("validate-site", feed={"type": "jsonl", "uri": str(EXAMPLES / "feeds/fed/site-a.jsonl")})
    capsys.readouterr()
    assert main(["peft", "validate", "--spec", str(site)]) == 0
    assert "federation: round 2026-12-01, exact, site: updates encrypted to aggregator" in capsys.readouterr().out
    unknown = fed.spec("validate-bad", federation={"sites": ["site-a", "nobody"]})
    assert main(["peft", "validate", "--spec", str(unknown)]) == 2
    assert "nobody" in capsys.readouterr().out


def test_two_aggregations_racing_for_one_round_release_it_once(fed):
    """Two aggregators started together on one route with the same updates: one packages; the
    other waits for the lock, finds every update used (replays under the lock) and exits 14."""
    import os
    import subprocess

    from tests.helpers import tgflow_exe

    spec = fed.spec("race")
    env = {**os.environ, "TGFLOW_HOME": str(fed.root / "home"), "TGFLOW_PASSPHRASE": PASS}
    argv = tgflow_exe() + ["fed", "aggregate", *map(str, (fed.updates[s] for s in SITES)), "--spec", str(spec),
                           "--quorum", "2", "--wait-busy", "120", "--json"]
    procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 14], outs
    loser = json.loads(next(o for p, (o, _) in zip(procs, outs) if p.returncode == 14).decode().strip().splitlines()[-1])
    assert all("replay" in r["reason"] for r in loser["refused"]) and len(loser["refused"]) == 3
    log = (fed.root / "out/race/.tgflow-state/support/log.jsonl").read_text()
    assert log.count('"outcome":"packaged"') == 1
