"""The route store: one owner, an OS-level lock, a hash-chained log, format tags, migration."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runners.state.keys import from_secret
from runners.state.store import CREATED, MIGRATED, RECOVERED, ROUND, SEALED, RouteStore
from tgsp.errors import InputError, RouteBusy


def _hold_lock(folder: Path) -> subprocess.Popen:
    """Another process holding the route's session until killed."""
    code = ("import sys, time; from runners.state.store import RouteStore\n"
            f"with RouteStore({str(folder)!r}, 'support').session('peft run'):\n"
            "    print('held', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_session_is_busy_and_changes_nothing(tmp_path):
    folder = tmp_path / "state"
    proc = _hold_lock(folder)
    try:
        before = (folder / "log.jsonl").read_bytes()
        with pytest.raises(RouteBusy, match=r"route support is busy: peft run \(pid \d+"):
            with RouteStore(folder, "support").session("peft run"):
                pytest.fail("entered a busy route")
        assert (folder / "log.jsonl").read_bytes() == before
        t0 = time.monotonic()
        with pytest.raises(RouteBusy):  # --wait-busy: it retries, then gives up
            with RouteStore(folder, "support").session("peft run", wait=0.5):
                pass
        assert time.monotonic() - t0 >= 0.5
    finally:
        proc.kill()
        proc.wait()
    # the kernel dropped the dead holder's lock: no stale lock to break, and the crash is logged
    with RouteStore(folder, "support").session("peft run") as store:
        recovered = [r for r in store.records if r["type"] == RECOVERED]
        assert len(recovered) == 1 and recovered[0]["data"]["holder"]["pid"] == proc.pid


def test_log_commits_line_by_line_and_drops_a_torn_tail(tmp_path):
    folder = tmp_path / "state"
    with RouteStore(folder, "support").session("t") as store:
        store.append(ROUND, {"outcome": "packaged", "version": 1, "package_id": "sha256:" + "a" * 64})
    with open(folder / "log.jsonl", "ab") as f:  # a crash in the middle of the next commit
        f.write(b'{"data":{"outcome":"packaged","version":2')
    with RouteStore(folder, "support").session("t") as store:
        assert [r["version"] for r in store.releases()] == [1] and store.next_version() == 2
    assert (folder / "log.jsonl").read_bytes().endswith(b"}\n")


def test_a_log_cut_short_or_edited_is_refused(tmp_path):
    folder = tmp_path / "state"
    with RouteStore(folder, "support").session("t") as store:
        store.append(ROUND, {"outcome": "packaged", "version": 1})
        store.append(ROUND, {"outcome": "packaged", "version": 2})
    lines = (folder / "log.jsonl").read_bytes().splitlines(keepends=True)
    (folder / "log.jsonl").write_bytes(b"".join(lines[:-1]))  # the last release erased
    with pytest.raises(InputError, match="cut short"):
        RouteStore(folder, "support").view()
    (folder / "log.jsonl").write_bytes(b"".join(lines).replace(b'"version":2', b'"version":7'))
    with pytest.raises(InputError, match="cut short or replaced"):  # the head file names the last record
        RouteStore(folder, "support").view()
    (folder / "log.jsonl").write_bytes(b"".join(lines).replace(b'"version":1', b'"version":7'))
    with pytest.raises(InputError, match="broken"):  # the next record's prev hash no longer matches
        RouteStore(folder, "support").view()


def test_a_missing_head_with_a_cut_tail_is_refused_and_repair_log_is_the_way_back(tmp_path, capsys):
    """Deleting log.head.json together with the last line went unnoticed (issue 26)."""
    from tgflow_cli.main import main

    folder = tmp_path / "state"
    with RouteStore(folder, "support").session("t") as store:
        store.append(ROUND, {"outcome": "packaged", "version": 1})
        store.append(ROUND, {"outcome": "packaged", "version": 2})
    lines = (folder / "log.jsonl").read_bytes().splitlines(keepends=True)
    (folder / "log.jsonl").write_bytes(b"".join(lines[:-1]))
    (folder / "log.head.json").unlink()
    for open_ in (lambda: RouteStore(folder, "support").view(), lambda: RouteStore(folder, "support").session("t")
                  .__enter__()):
        with pytest.raises(InputError, match="no log.head.json") as err:
            open_()
        assert f"tgflow route repair-log support --state {folder}" in err.value.hint
    # the operator restores the log, or vouches for this one: the chain is checked, the head re-recorded
    assert main(["route", "repair-log", "support", "--state", str(folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["entries"] == len(lines) - 1
    assert len(RouteStore(folder, "support").view().records) == len(lines) - 1
    (folder / "log.jsonl").write_bytes(lines[0] + lines[2])  # a log whose own chain is broken is never vouched for
    assert main(["route", "repair-log", "support", "--state", str(folder)]) == 2 and "broken" in capsys.readouterr().err


def test_a_store_whose_first_line_has_no_head_yet_opens(tmp_path):
    """The one crash window without a head: right after the store's first line."""
    folder = tmp_path / "state"
    with RouteStore(folder, "support").session("t"):
        pass
    (folder / "log.head.json").unlink()
    with RouteStore(folder, "support").session("t") as store:
        store.append(ROUND, {"outcome": "packaged", "version": 1})
    assert len(RouteStore(folder, "support").view().records) == 2


def test_a_store_belongs_to_one_route(tmp_path):
    with RouteStore(tmp_path, "support").session("t"):
        pass
    with pytest.raises(InputError, match="belongs to route 'support'"):
        with RouteStore(tmp_path, "billing").session("t"):
            pass


def _legacy(folder: Path) -> bytes:
    """A route folder as tgflow wrote it before the store (untagged files)."""
    from safetensors.torch import save_file
    import torch

    (folder / "novelty").mkdir(parents=True)
    (folder / "rounds").mkdir()
    key = bytes(range(32))
    (folder / "audit-key").write_text(key.hex())
    (folder / "route.json").write_text(json.dumps({"route": "support", "last_version": 4, "package_id": "sha256:" + "b" * 64}))
    (folder / "novelty" / "history.json").write_text(json.dumps({"model_digest": "m", "digests": ["d1", "d2"]}))
    save_file({"embeddings": torch.zeros(2, 4)}, str(folder / "novelty" / "history.safetensors"))
    (folder / "rounds" / "old.report.json").write_text("{}")
    return key


def test_a_pre_store_folder_migrates_on_first_use(tmp_path):
    folder = tmp_path / "state"
    key = _legacy(folder)
    keys = from_secret("support", b"test store keys, thirty-two byte")
    with RouteStore(folder, "support", keys=keys).session("peft run") as store:
        assert [r["type"] for r in store.records] == [CREATED, MIGRATED, SEALED]
        assert store.next_version() == 5 and store.releases()[0]["package_id"] == "sha256:" + "b" * 64
        assert store.audit_key() == key  # the keyed digests of earlier rounds stay comparable
        assert store.seen().digests == {"d1", "d2"}
    assert not any((folder / n).exists() for n in ("route.json", "audit-key", "novelty/history.json",
                                                   "novelty/history.safetensors"))
    assert (folder / "rounds" / "old.report.json").exists()
    for p in folder.rglob("*.json"):  # every state file now carries a format tag
        if p.parent.name != "rounds":
            assert json.loads(p.read_text())["format"].startswith("tgflow."), p
    with RouteStore(folder, "support", keys=keys).session("peft run") as store:  # once only
        assert [r["type"] for r in store.records] == [CREATED, MIGRATED, SEALED]


def test_a_damaged_legacy_state_is_not_guessed(tmp_path):
    folder = tmp_path / "state"
    _legacy(folder)
    (folder / "route.json").write_text('{"last_version": true}')
    with pytest.raises(InputError, match="cannot migrate"):
        with RouteStore(folder, "support").session("t"):
            pass
    assert not (folder / "store.json").exists()


def test_readers_without_the_lock_never_see_a_false_cut(tmp_path):
    """route show/history read the log while a round appends to it: never 'cut short'."""
    folder = tmp_path / "state"
    with RouteStore(folder, "support").session("t"):
        pass
    code = ("from runners.state.store import RouteStore, ROUND\n"
            f"with RouteStore({str(folder)!r}, 'support').session('writer') as s:\n"
            "    for i in range(300):\n        s.append(ROUND, {'outcome': 'skipped-low-novelty', 'i': i})\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2])
    reads = 0
    while proc.poll() is None:
        RouteStore(folder, "support").view()
        reads += 1
    assert proc.returncode == 0 and reads > 0
    assert len(RouteStore(folder, "support").view().rounds()) == 300
