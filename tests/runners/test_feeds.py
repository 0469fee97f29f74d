"""Feeds: every source type, and bad rows named by line."""

from __future__ import annotations

import json

import pytest

import tgsp
from runners.data.feeds import Example, load_feed
from runners.spec import FeedSpec
from tgsp.errors import InputError, NotFoundError
from tgsp.keyring import Keyring

from tests.helpers import pp

ROWS = [{"text": "plain words"}, {"prompt": "Q: hi\nA:", "completion": " hello"},
        {"messages": [{"role": "user", "content": "ping"}, {"role": "assistant", "content": "pong"}]}]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_all_three_row_shapes(tmp_path):
    feed = load_feed(FeedSpec(type="jsonl", uri="f.jsonl"), tmp_path) if write_jsonl(tmp_path / "f.jsonl", ROWS) else None
    assert feed.examples[0] == Example("", "plain words")
    assert feed.examples[1] == Example("Q: hi\nA:", " hello")
    assert feed.examples[2].target == "pong\n" and "ping" in feed.examples[2].prompt
    assert len(feed.digest) == 64


def test_chat_template_is_used_when_the_tokenizer_has_one(tmp_path):
    write_jsonl(tmp_path / "f.jsonl", ROWS[2:])
    feed = load_feed(FeedSpec(type="jsonl", uri="f.jsonl"), tmp_path, chat_template=lambda m: "|".join(x["content"] for x in m))
    assert feed.examples[0] == Example("", "ping|pong")


@pytest.mark.parametrize("line,needle", [
    ("{broken", "f.jsonl:2: not valid JSON"),
    ('{"title": "x"}', "f.jsonl:2: row has none of"),
    ('{"messages": "hi"}', "f.jsonl:2: \"messages\" must be"),
    ("[1, 2]", "f.jsonl:2: row is not a JSON object"),
])
def test_corrupt_rows_are_named(tmp_path, line, needle):
    (tmp_path / "f.jsonl").write_text(json.dumps(ROWS[0]) + "\n" + line + "\n")
    with pytest.raises(InputError, match=needle.replace("(", r"\(").replace('"', '"')):
        load_feed(FeedSpec(type="jsonl", uri="f.jsonl"), tmp_path)


def test_missing_feed_names_the_path(tmp_path):
    with pytest.raises(NotFoundError, match="missing.jsonl"):
        load_feed(FeedSpec(type="jsonl", uri="missing.jsonl"), tmp_path)


def test_parquet_and_saved_dataset(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset, DatasetDict

    pq.write_table(pa.Table.from_pylist([{"text": "a"}, {"text": "b"}]), tmp_path / "f.parquet")
    assert [e.target for e in load_feed(FeedSpec(type="parquet", uri="f.parquet"), tmp_path).examples] == ["a", "b"]
    DatasetDict({"train": Dataset.from_list([{"body": "x"}, {"body": "y"}])}).save_to_disk(str(tmp_path / "ds"))
    feed = load_feed(FeedSpec(type="dataset", uri="ds", text_field="body"), tmp_path)
    assert [e.target for e in feed.examples] == ["x", "y"]
    with pytest.raises(InputError, match="no split 'test'"):
        load_feed(FeedSpec(type="dataset", uri="ds", split="test"), tmp_path)
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputError, match="not a readable Parquet"):
        load_feed(FeedSpec(type="parquet", uri="junk.parquet"), tmp_path)


def test_hf_dataset_not_in_cache_is_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    with pytest.raises(NotFoundError, match="not in the local Hugging Face cache"):
        load_feed(FeedSpec(type="hf", uri="someone/some-dataset"), tmp_path)


def test_signed_tgsp_data_package_is_verified_before_use(tmp_path):
    kr = Keyring(tmp_path / "home")
    kr.generate("data-signer", "signing", pp)
    src = tmp_path / "data"
    src.mkdir()
    write_jsonl(src / "rows.jsonl", ROWS[:2])
    pkg = tmp_path / "data.tgsp"
    res = tgsp.build(src, pkg, kind="data", signers=[kr.signer("data-signer", pp)])
    feed = load_feed(FeedSpec(type="tgsp", uri="data.tgsp"), tmp_path, keyring=kr)
    assert feed.package_id == res.package_id and len(feed.examples) == 2
    stranger = Keyring(tmp_path / "stranger")
    with pytest.raises(tgsp.errors.VerificationFailed, match="no trusted signer"):
        load_feed(FeedSpec(type="tgsp", uri="data.tgsp"), tmp_path, keyring=stranger)


def test_tgsp_feed_needs_kind_data_and_honours_route_and_version_pins(tmp_path):
    """A signed adapter (or an old data package of another route) signed by the
    same trusted key is not a data feed (issue 10, item 3: route and kind pins)."""
    kr = Keyring(tmp_path / "home")
    kr.generate("data-signer", "signing", pp)
    src = tmp_path / "data"
    src.mkdir()
    write_jsonl(src / "rows.jsonl", ROWS[:2])
    signer = kr.signer("data-signer", pp)
    tgsp.build(src, tmp_path / "adapter.tgsp", kind="adapter", route="tickets", version=5, signers=[signer])
    tgsp.build(src, tmp_path / "data.tgsp", kind="data", route="tickets", version=5, signers=[signer])
    with pytest.raises(tgsp.errors.VerificationFailed, match="kind 'adapter', not the expected 'data'"):
        load_feed(FeedSpec(type="tgsp", uri="adapter.tgsp"), tmp_path, keyring=kr)
    with pytest.raises(tgsp.errors.VerificationFailed, match="route 'tickets', not the expected 'other'"):
        load_feed(FeedSpec(type="tgsp", uri="data.tgsp", route="other"), tmp_path, keyring=kr)
    with pytest.raises(tgsp.errors.VerificationFailed, match="below the rollback floor 6"):
        load_feed(FeedSpec(type="tgsp", uri="data.tgsp", route="tickets", min_version=6), tmp_path, keyring=kr)
    feed = load_feed(FeedSpec(type="tgsp", uri="data.tgsp", route="tickets", min_version=5), tmp_path, keyring=kr)
    assert len(feed.examples) == 2


def test_rows_are_read_with_a_bounded_reader(tmp_path):
    """A 200 MiB line, or /dev/zero as a feed, was read whole before the row check (issue 26)."""
    import subprocess
    import sys

    big = tmp_path / "big.jsonl"
    with open(big, "wb") as f:
        f.write(b'{"text": "')
        f.truncate(200 << 20)  # a sparse 200 MiB file: one line, no newline
    # VmHWM is this process's own peak: ru_maxrss would carry the pytest worker's peak across execve
    code = ("import re, sys\n"
            "from runners.data.feeds import load_feed\nfrom runners.spec import FeedSpec\n"
            "from tgsp.errors import InputError\n"
            "for uri in sys.argv[1:]:\n"
            "    try:\n"
            "        load_feed(FeedSpec(type='jsonl', uri=uri), base=None)\n"
            "    except InputError as exc:\n"
            "        print(exc)\n"
            "print(re.search(r'VmHWM:\\s*(\\d+)', open('/proc/self/status').read()).group(1))")
    out = subprocess.run([sys.executable, "-c", code, str(big), "/dev/zero"], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert all("row is longer than 1048576 bytes" in line for line in out[:2]), out
    assert int(out[2]) < 150_000  # peak KiB (about 45 MB here): far below one 200 MiB line
