"""Issue 10, item 2: untrusted text never drives the terminal.

Arbitrary strings go into every field a package, a key file or the command
line can carry; the real CLI must not crash, must print no escape or other
control byte, and its JSON must give the strings back exactly."""

from __future__ import annotations

import json
import string
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import tgsp
from tgsp import lineage as L
from tgsp.errors import UnsafeEntryError
from tgsp.keyring import Keyring
from tgsp.paths import check_relpath
from tgflow_cli.main import main
from tgflow_cli.term import clean

from tests.helpers import PASS, pp

NASTY = ["[/x]", "[bold red]VERIFIED[/]", "\x1b[2K\x1b[1G\x1b[32mVERIFIED\x1b[0m", "\x9b31m", "\u202eesrever",
         "a\nVERIFIED sha256:00", "see [/ops/INC-42]", ":smile:", "\x07\x08\r", "[link=file:///etc]x[/link]"]
hostile = st.one_of(st.sampled_from(NASTY), st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40),
                    st.text(alphabet=string.printable + "\x1b\x9b\u202e[]/", max_size=40))


def _bad_bytes(text: str) -> list[str]:
    """Characters that must never reach a terminal from data."""
    return [c for c in text if c != "\n" and not c.isprintable()]


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    kr = Keyring(root / "home")
    kr.generate("rel", "signing", pp)
    kr.generate("other", "signing", pp)
    obj = kr._load_key("rel")
    key = kr._unseal(obj, obj["versions"][0], pp)
    return root, kr, key, kr.signer("rel", pp)


def _cli(capsys, monkeypatch, home, *argv):
    monkeypatch.setenv("TGFLOW_HOME", str(home))
    monkeypatch.setenv("TGFLOW_PASSPHRASE", PASS)
    code = main([str(a) for a in argv])
    o, e = capsys.readouterr()
    return code, o, e


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=hostile, fname=hostile, reason=hostile)
def test_hostile_strings_in_every_printed_field(kit, tmp_path_factory, capsys, monkeypatch, name, fname, reason):
    root, kr, key, signer = kit
    work = tmp_path_factory.mktemp("case")
    src = work / "src"
    src.mkdir()
    try:
        check_relpath(fname)
        (src / fname).parent.mkdir(parents=True, exist_ok=True)
        (src / fname).write_bytes(b"x")
    except (UnsafeEntryError, OSError):
        (src / "plain.bin").write_bytes(b"x")
    pkg = work / "p.tgsp"
    tgsp.build(src, pkg, signers=[tgsp.Signer(name, signer.version, signer.key, signer.lineage)])
    rev = work / "rev.json"
    stmt = L.revocation_statement(signer.keyid, reason or "r", datetime(2000, 1, 1, tzinfo=timezone.utc), key,
                                  signer.lineage)
    rev.write_text(json.dumps(stmt))
    for argv, codes in ((["tgsp", "verify", pkg], {0}), (["tgsp", "verify", pkg, "--trusted", "other"], {1}),
                        (["tgsp", "verify", pkg, "--revocations", rev], {1}), (["tgsp", "inspect", pkg], {0}),
                        (["tgsp", "verify", work / f"missing-{name}.tgsp"], {2}), (["key", "show", name], {2, 3}),
                        (["tgsp", "verify", pkg, f"--x{name}"], {2})):
        for extra in ([], ["--json"]):
            code, o, e = _cli(capsys, monkeypatch, kr.home, *argv, *extra)
            assert code in codes, (argv, extra, o, e)
            assert "internal error" not in e
            assert not _bad_bytes(o) and not _bad_bytes(e), (argv, o, e)
            if extra:
                json.loads(o)  # exactly one JSON document, whatever the strings
    code, o, _ = _cli(capsys, monkeypatch, kr.home, "tgsp", "inspect", pkg, "--json")
    assert json.loads(o)["manifest"]["signers"][0]["name"] == name  # JSON stays exact


def test_clean_escapes_controls_and_keeps_ordinary_text():
    assert clean("release-2 ünïcødé [ok]") == "release-2 ünïcødé [ok]"
    assert clean("\x1b[31mX\n\u202e\x9b") == "\\x1b[31mX\\x0a\\u202e\\x9b"
