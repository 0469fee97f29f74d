"""Issue 10, items 5 and 8: one table of every documented exit code, and each
former `internal error`, through the real CLI (`tgflow_cli.main.main`)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import tgsp
from tgflow_cli.errors import MEANINGS
from tgflow_cli.main import main
from tgsp import manifest as mf
from tgsp.errors import FormatError

from tests.helpers import PASS, make_adapter

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """Keys and two packages, made once; each test gets its own copy."""
    root = tmp_path_factory.mktemp("codes")
    keep = {k: os.environ.get(k) for k in ("TGFLOW_HOME", "TGFLOW_PASSPHRASE")}
    os.environ.update(TGFLOW_HOME=str(root / "h"), TGFLOW_PASSPHRASE=PASS)
    try:
        main(["key", "generate", "rel"])
        for name in ("ops", "eve"):
            main(["key", "generate", name, "--type", "recipient"])
        src = make_adapter(root / "src")
        main(["tgsp", "build", str(src), "-o", str(root / "sealed.tgsp"), "--sign", "rel", "--recipient", "ops"])
        main(["tgsp", "build", str(src), "-o", str(root / "unsigned.tgsp")])
    finally:
        for k, v in keep.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    return root


@pytest.fixture
def env(template, tmp_path, monkeypatch, capsys):
    work = tmp_path / "w"
    shutil.copytree(template, work, symlinks=True)
    monkeypatch.setenv("TGFLOW_HOME", str(work / "h"))
    monkeypatch.setenv("TGFLOW_PASSPHRASE", PASS)
    monkeypatch.delenv("TGFLOW_PASSPHRASE_FILE", raising=False)
    capsys.readouterr()
    return work


def _case(tmp: Path, monkeypatch, name: str) -> list[str]:
    """Set up one case; returns its argv (paths under tmp)."""
    t = str(tmp)
    if name == "ok":
        return ["tgsp", "verify", f"{t}/sealed.tgsp"]
    if name == "unsigned":
        return ["tgsp", "verify", f"{t}/unsigned.tgsp"]
    if name == "unknown-flag":
        return ["tgsp", "verify", f"{t}/sealed.tgsp", "--nope"]
    if name == "unsafe-source":
        os.mkfifo(tmp / "src" / "pipe")
        return ["tgsp", "build", f"{t}/src", "-o", f"{t}/x.tgsp"]
    if name == "non-empty-output":
        (tmp / "full").mkdir()
        (tmp / "full" / "mine").write_text("keep")
        return ["tgsp", "unpack", f"{t}/sealed.tgsp", "-o", f"{t}/full", "--identity", "ops"]
    if name == "symlinked-output":
        (tmp / "real").mkdir()
        os.symlink(tmp / "real", tmp / "link")
        return ["tgsp", "unpack", f"{t}/sealed.tgsp", "-o", f"{t}/link", "--identity", "ops"]
    if name == "missing-trusted-file":
        return ["tgsp", "verify", f"{t}/sealed.tgsp", "--trusted", f"{t}/nope.pub.json"]
    if name == "missing-import-file":
        return ["key", "import", f"{t}/nope.pub.json"]
    if name == "wrong-passphrase":
        monkeypatch.setenv("TGFLOW_PASSPHRASE", "wrong")
        return ["tgsp", "sign", f"{t}/unsigned.tgsp", "--key", "rel"]
    if name == "binary-passphrase-file":
        (tmp / "pp").write_bytes(b"\xff\xfe\x00bin")
        return ["tgsp", "sign", f"{t}/unsigned.tgsp", "--key", "rel", "--passphrase-file", f"{t}/pp"]
    if name == "home-is-a-file":
        (tmp / "afile").write_text("x")
        monkeypatch.setenv("TGFLOW_HOME", f"{t}/afile")
        return ["key", "list"]
    if name == "gcp-without-credentials":
        monkeypatch.delenv("TGFLOW_PASSPHRASE")
        monkeypatch.setenv("TGFLOW_PASSPHRASE_SECRET", "projects/p/secrets/s/versions/1")
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", f"{t}/no-such-credentials.json")
        return ["key", "generate", "k2"]
    if name == "not-a-recipient":
        return ["tgsp", "unpack", f"{t}/sealed.tgsp", "-o", f"{t}/o", "--identity", "eve"]
    if name == "read-only-output":
        (tmp / "ro").mkdir(mode=0o500)
        return ["tgsp", "unpack", f"{t}/sealed.tgsp", "-o", f"{t}/ro/o", "--identity", "ops"]
    if name == "read-only-export":
        (tmp / "ro").mkdir(mode=0o500)
        return ["export", "--backend", "k8s", "--spec", str(ROOT / "examples" / "run_spec.json"), "-o", f"{t}/ro/k8s"]
    if name == "disk-full-during-unpack":
        import sys

        U = sys.modules["tgsp.unpack"]  # (tgsp.unpack the name is the function)

        def full(*a, **k):
            raise OSError(28, "No space left on device")
        monkeypatch.setattr(U, "write_all", full)
        return ["tgsp", "unpack", f"{t}/sealed.tgsp", "-o", f"{t}/o", "--identity", "ops"]
    if name == "dp-budget-spent":
        return ["peft", "budget", "--spec", _spent_dp_spec(tmp)]
    if name == "route-busy":
        return _busy_registry(tmp, monkeypatch)
    raise AssertionError(name)


def _busy_registry(tmp: Path, monkeypatch) -> list[str]:
    """Another editor holds the route's registry lock (an flock on another open file)."""
    import fcntl

    import runners.state.backends as R

    from tgsp.keyring import Keyring

    tgsp.build(tmp / "src", tmp / "adapter.tgsp", kind="adapter", route="support",
               signers=[Keyring(tmp / "h").signer("rel", lambda: PASS)])
    lock = tmp / "reg" / "routes" / "support" / "lock"
    lock.parent.mkdir(parents=True)
    held = open(lock, "a+")
    fcntl.flock(held, fcntl.LOCK_EX)
    monkeypatch.setattr(R, "LOCK_WAIT", 0.2)
    monkeypatch.setattr(R, "_held_for_test", held, raising=False)  # kept open until the test ends
    return ["route", "register", str(tmp / "adapter.tgsp"), "--registry", str(tmp / "reg"), "--signing-key", "rel"]


def _spent_dp_spec(tmp: Path) -> str:
    spec = json.loads((ROOT / "examples" / "run_spec_dp.json").read_text())
    spec["base_model_ref"] = str(ROOT / "examples" / "tiny-base")
    for f in ("feed", "reference", "eval"):
        spec[f]["uri"] = str(ROOT / "examples" / spec[f]["uri"])
    spec["privacy"]["dp"]["route_budget_epsilon"] = spec["privacy"]["dp"]["target_epsilon"]
    spec["output"]["path"] = str(tmp / "dp" / "a.tgsp")
    state = tmp / "dp" / ".tgflow-state" / spec["route_key"]
    state.mkdir(parents=True)
    (tmp / "s.json").write_text(json.dumps(spec))
    from runners.privacy.ledger import Ledger  # spend the whole budget in one settled round

    ledger = Ledger.load(state, spec["route_key"])
    from runners.privacy.accounting import DpEvent

    ledger.begin("r0", DpEvent(0.8, 0.2, 100), {})  # epsilon about 22, far over the budget of 3
    ledger.settle("r0", {"outcome": "packaged"})
    return str(tmp / "s.json")


TABLE = [  # (case, exit code, words the one-line error must hold)
    ("ok", 0, ""),
    ("unsigned", 1, "not signed"),
    ("unknown-flag", 2, "No such option"),
    ("unsafe-source", 2, "not a regular file"),
    ("non-empty-output", 2, "not an empty folder"),
    ("symlinked-output", 2, "symbolic link"),
    ("missing-trusted-file", 2, "does not exist"),
    ("missing-import-file", 2, "does not exist"),
    ("wrong-passphrase", 3, "wrong passphrase"),
    ("binary-passphrase-file", 3, "not UTF-8"),
    ("home-is-a-file", 3, "not a folder"),
    ("gcp-without-credentials", 3, "credentials"),
    ("not-a-recipient", 4, "is a recipient of this package"),
    ("read-only-output", 5, "cannot"),
    ("read-only-export", 5, "cannot"),
    ("disk-full-during-unpack", 5, "No space left"),
    ("dp-budget-spent", 13, "privacy budget exhausted"),
    ("route-busy", 73, "registry route support is busy"),
]


@pytest.mark.parametrize("case,code,needle", TABLE, ids=[c[0] for c in TABLE])
@pytest.mark.parametrize("json_mode", [False, True], ids=["text", "json"])
def test_exit_code_table(env, monkeypatch, capsys, case, code, needle, json_mode):
    if case.startswith("read-only") and os.geteuid() == 0:  # root ignores mode bits: make the FS say no
        import errno
        import tempfile

        def erofs(*a, **k):
            raise OSError(errno.EROFS, "Read-only file system")
        monkeypatch.setattr(tempfile, "mkstemp", erofs)
        monkeypatch.setattr(tempfile, "mkdtemp", erofs)
    argv = _case(env, monkeypatch, case) + (["--json"] if json_mode else [])
    got = main(argv)
    out, err = capsys.readouterr()
    assert got == code, (case, out, err)
    assert "internal error" not in err and needle in err
    if code:
        assert err.splitlines()[0].startswith("error: ") and len(err.strip().splitlines()) <= 2
        if json_mode:  # one JSON document on stdout, usage errors included
            doc = json.loads(out)
            assert doc.get("ok") is not True and doc.get("error", {}).get("exit_code", code) == code
    assert not any(p.name.endswith((".tmp", ".unpack")) for p in env.rglob("*"))


def test_documented_codes_are_the_table():
    doc = (ROOT / "docs" / "cli.md").read_text()
    for code in MEANINGS:
        assert f"| {code} |" in doc, f"exit code {code} is not in docs/cli.md"


def test_manifest_listing_a_file_and_a_folder_of_the_same_name_is_a_format_error(world):
    with tgsp.open_package(world.pkg) as pkg:
        m = json.loads(json.dumps(pkg.manifest))
    f = dict(m["files"][0])
    m["files"] = sorted([dict(f, path="a"), dict(f, path="a/b")], key=lambda x: x["path"])
    with pytest.raises(FormatError, match="both as a file and as a folder"):
        mf.validate(m)


def test_missing_lora_target_names_the_models_modules(tmp_path):
    from runners.spec import LoraSpec
    from runners.learn.train import add_lora
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(ROOT / "examples" / "tiny-base")
    with pytest.raises(tgsp.errors.InputError, match="q_projj not found") as info:
        add_lora(model, LoraSpec(target_modules=["q_projj"]), 0)
    assert "q_proj" in info.value.hint


@pytest.mark.parametrize("patch,needle", [
    ({"training": {"steps": "100", "batch_size": 8}}, "training.steps: Input should be a valid integer"),
    ({"trainig": {}}, "trainig: unknown field; did you mean 'training'?"),
    ({"feed": {"type": "hf_dataset", "uri": "x"}}, "'hf_dataset' is called 'hf' in tgflow"),
    ({"lora": {"r": 4, "dropout": "0.1", "alpha": True}}, "run spec has 2 problems"),
])
def test_spec_errors_are_strict_and_all_listed(tmp_path, capsys, monkeypatch, patch, needle):
    spec = json.loads((ROOT / "examples" / "run_spec.json").read_text())
    spec.update(patch)
    (tmp_path / "s.json").write_text(json.dumps(spec))
    monkeypatch.setenv("TGFLOW_HOME", str(tmp_path / "h"))
    assert main(["peft", "validate", "--spec", str(tmp_path / "s.json")]) == 2
    err = capsys.readouterr().err
    assert needle in err and "more)" not in err


def test_peft_validate_lists_every_problem(tmp_path, capsys, monkeypatch):
    spec = json.loads((ROOT / "examples" / "run_spec.json").read_text())
    spec["base_model_ref"] = str(tmp_path / "no-model")
    spec["feed"]["uri"] = str(tmp_path / "missing.jsonl")
    spec["reference"]["uri"] = str(ROOT / "examples" / spec["reference"]["uri"])
    spec["eval"]["uri"] = str(ROOT / "examples" / spec["eval"]["uri"])
    (tmp_path / "s.json").write_text(json.dumps(spec))
    monkeypatch.setenv("TGFLOW_HOME", str(tmp_path / "h"))
    assert main(["peft", "validate", "--spec", str(tmp_path / "s.json"), "--json"]) == 2
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert [n for n, c in checks.items() if not c["ok"]] == ["keys", "model", "feed"]
    assert checks["reference"]["ok"] and checks["output"]["ok"]


def test_sign_accepts_the_older_spelling(env, capsys):
    assert main(["tgsp", "sign", "--package", str(env / "unsigned.tgsp"), "--key-id", "rel"]) == 0
    assert main(["tgsp", "verify", str(env / "unsigned.tgsp")]) == 0


@pytest.mark.parametrize("argv", [
    ["tgsp", "build", "{t}/src", "-o", "{t}/a.tgsp", "--sign", "rel", "--sign", "rel"],
    ["tgsp", "build", "{t}/src", "-o", "{t}/a.tgsp", "--sign", "rel", "--route", "bad/route"],
    ["tgsp", "build", "{t}/src", "-o", "{t}/a.tgsp", "--sign", "rel", "--kind", "Not A Kind"],
    ["tgsp", "build", "{t}/src", "-o", "{t}/a.tgsp", "--sign", "rel", "--version", "99999999999999999999"],
    ["tgsp", "verify", "{t}/sealed.tgsp", "--route", "bad/route"],
    ["tgsp", "verify", "{t}/sealed.tgsp", "--kind", "Not A Kind"],
], ids=["duplicate --sign", "build --route", "build --kind", "build --version", "verify --route", "verify --kind"])
def test_a_malformed_flag_is_bad_input_not_a_failed_check(env, capsys, argv):
    """Issue 26: these exited 1 (a verification failure) and wrote nothing; they are the caller's typos: 2."""
    code = main([a.format(t=env) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and "internal error" not in err, err
    assert not (env / "a.tgsp").exists()
