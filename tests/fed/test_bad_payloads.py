"""One enrolled site cannot stop an aggregation (issue 26): an update that is signed by a trusted
site and passes screening, but whose payload does not decode or fit, is refused with its reason
and the round goes on with the rest while the quorum holds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import tgsp
from tests.helpers import PASS

from .conftest import SITES
from .test_federation import aggregate


def _resigned(fed, src: Path, dst: Path, change) -> Path:
    """``src`` opened with the aggregator's key, its payload changed, and signed again by the
    same trusted site key: what a faulty or hostile enrolled site could send."""
    kr = tgsp.Keyring(fed.root / "home")
    report = tgsp.verify(src, kr.trust_policy())
    folder = dst.parent / (dst.name + ".src")
    tgsp.unpack(src, folder, kr.trust_policy(), identities=kr.identities("aggregator", lambda: PASS))
    change(folder)
    m = report.manifest
    tgsp.build(folder, dst, route=m["route"], kind=m["kind"], recipients=[kr.public_file("aggregator").key],
               signers=[kr.signer(m["signers"][0]["name"], lambda: PASS)],
               extra={"federation": m["federation"], "privacy": m.get("privacy")})
    shutil.rmtree(folder)
    return dst


def _scale(value: float):
    def change(folder: Path) -> None:
        from safetensors.numpy import load_file, save_file

        path = folder / "delta" / "00000.safetensors"
        parts = load_file(str(path))
        key = next(k for k in parts if k.endswith(".scale"))
        parts[key] = np.full_like(parts[key], value)
        save_file(parts, str(path))
    return change


def _garbage(folder: Path) -> None:
    (folder / "delta" / "00001.safetensors").write_bytes(b"\xff" * 8 + b"not safetensors")


def _huge_header(folder: Path) -> None:
    (folder / "delta" / "00001.safetensors").write_bytes((1 << 62).to_bytes(8, "little") + b"{}")


def _extra_file(folder: Path) -> None:
    (folder / "delta" / "99999.safetensors").write_bytes(b"")


def _renamed_module(folder: Path) -> None:
    index = json.loads((folder / "modules.json").read_text())
    index["modules"][0] = index["modules"][0] + ".renamed"
    (folder / "modules.json").write_text(json.dumps(index))


CHANGES = {"nan scale": (_scale(float("nan")), "module 0"), "inf scale": (_scale(float("inf")), "module 0"),
           "huge scale": (_scale(3e38), "module 0"), "garbage safetensors": (_garbage, "module 1"),
           "2^62 header": (_huge_header, "module 1"), "an extra file": (_extra_file, "other payload files"),
           "a renamed module": (_renamed_module, "module list")}


@pytest.mark.parametrize("case", CHANGES)
def test_an_update_whose_payload_is_unusable_is_refused_and_the_round_goes_on(fed, capsys, tmp_path, case):
    change, says = CHANGES[case]
    bad = _resigned(fed, fed.updates["site-b"], tmp_path / "bad.tgsp", change)
    code, report = aggregate(fed, capsys, f"bad-{case.replace(' ', '-').replace('^', '')}",
                             [fed.updates["site-a"], bad, fed.updates["site-c"]], "--quorum", "2")
    assert code == 0, report
    agg = report["training"]["aggregation"]
    assert sorted(a["site"] for a in agg["accepted"]) == ["site-a", "site-c"]
    (refused,) = agg["refused"]
    assert refused["site"] == "site-b" and says in refused["reason"], refused


def test_when_the_bad_update_breaks_the_quorum_nothing_is_released(fed, capsys, tmp_path):
    bad = _resigned(fed, fed.updates["site-b"], tmp_path / "bad.tgsp", _garbage)
    code, report = aggregate(fed, capsys, "bad-quorum", [fed.updates["site-a"], bad], "--quorum", "2")
    assert code == 14 and "module 1" in json.dumps(report["refused"])
    assert not (fed.root / "out" / "bad-quorum" / "support.tgsp").exists()
    assert set(SITES) >= {r["site"] for r in report["refused"]}


def test_an_updates_cleartext_evidence_carries_no_training_loss(fed):
    """The evidence travels in cleartext with the update: per-step losses, token counts and
    timings stay in the site's own report (issue 26)."""
    with tgsp.open_package(fed.updates["site-a"]) as p:
        training = next(e["data"] for e in p.evidence if e["type"] == "tgflow.training")
    assert training["withheld_from_update"] and not {"loss_curve", "loss_first", "loss_last", "tokens"} & set(training)
    assert training["steps"] > 0


@pytest.mark.parametrize("privacy", [{"mode": "dp", "site": "someone-else", "site_key": "ab" * 32}, "a string",
                                     ["a", "list"], None])
def test_a_sites_privacy_record_cannot_rename_it_or_stop_the_release(privacy):
    """The site's own record is copied into the release's, under the aggregator's names for it."""
    from runners.fed.updates import Screened
    from runners.stages.aggregation import privacy_record

    s = Screened(Path("u.tgsp"), "sha256:" + "0" * 64, "cd" * 32, "site-a", 1.0, {"privacy": privacy}, None)
    (site,) = privacy_record([s])["sites"]
    assert site["site"] == "site-a" and site["site_key"] == "cd" * 32
    assert site["mode"] == ("dp" if isinstance(privacy, dict) else "unknown")


def test_a_module_list_with_a_duplicate_key_is_refused():
    from runners.fed import updates

    class Reader:
        files = {updates.INDEX, "delta/00000.safetensors"}
        report = type("R", (), {"package_id": "sha256:" + "1" * 64})()

        def read(self, name, max_bytes):
            return b'{"format": "%s", "modules": ["m"], "modules": ["m"]}' % updates.INDEX_FORMAT.encode()

    with pytest.raises(updates.BadUpdate, match="module list"):
        updates.index_ok(Reader(), ["m"], {"delta/00000.safetensors"}, "1 modules")
