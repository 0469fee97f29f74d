"""Reading a feed into training examples, with errors that name the row.

Rows may be plain text ({"text"}), prompt/completion ({"prompt",
"completion"}: loss on the completion only), or chat ({"messages": [{role,
content}]}, rendered with the tokenizer's chat template when it has one).
Sources: local JSONL, Parquet, a `datasets` save_to_disk folder, a signed
TGSP data package (verified, then read), or a Hugging Face dataset id that
is already in the local cache. Nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import json
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from tgsp.canonical import encode
from tgsp.errors import InputError, NotFoundError

from ..spec import FeedSpec, resolve

MAX_ROW_BYTES = 1 << 20


@dataclass(frozen=True)
class Example:
    prompt: str  # context that is not trained on ("" for plain text)
    target: str  # the text whose tokens carry the loss

    @property
    def text(self) -> str:
        return self.prompt + self.target

    @property
    def digest(self) -> str:
        return hashlib.sha256(encode([self.prompt, self.target])).hexdigest()


@dataclass(frozen=True)
class Feed:
    examples: list[Example]
    source: str
    digest: str  # SHA-256 over the canonical list of examples
    package_id: str | None = None  # for TGSP data packages


def _render_chat(messages: Any, where: str, chat_template) -> Example:
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages):
        raise InputError(f"{where}: \"messages\" must be a non-empty list of {{role, content}} strings")
    if chat_template is not None:
        return Example("", chat_template(messages))
    head = "".join(f"<{m['role']}>: {m['content']}\n" for m in messages[:-1])
    last = messages[-1]
    return Example(head + f"<{last['role']}>: ", last["content"] + "\n")


def row_to_example(row: Any, where: str, text_field: str | None = None, chat_template=None) -> Example:
    if not isinstance(row, dict):
        raise InputError(f"{where}: row is not a JSON object")
    if text_field:
        value = row.get(text_field)
        if not isinstance(value, str) or not value:
            raise InputError(f"{where}: field {text_field!r} is missing or not a non-empty string")
        return Example("", value)
    if isinstance(row.get("text"), str) and row["text"]:
        return Example("", row["text"])
    if isinstance(row.get("prompt"), str) and isinstance(row.get("completion"), str) and row["completion"]:
        return Example(row["prompt"], row["completion"])
    if "messages" in row:
        return _render_chat(row["messages"], where, chat_template)
    raise InputError(f"{where}: row has none of \"text\", \"prompt\"+\"completion\", or \"messages\"",
                     hint="each row must be plain text, a prompt/completion pair, or chat messages")


def _jsonl_rows(path: Path) -> Iterable[tuple[str, Any]]:
    with open(path, "rb") as f:
        yield from _jsonl_lines(f, str(path))


def _jsonl_lines(f, path: str) -> Iterable[tuple[str, Any]]:
    n = 0
    while line := f.readline(MAX_ROW_BYTES + 1):  # bounded: a 200 MiB line or /dev/zero is never read whole
        n += 1
        if len(line) > MAX_ROW_BYTES:
            raise InputError(f"{path}:{n}: row is longer than {MAX_ROW_BYTES} bytes")
        if not line.strip():
            continue
        try:
            yield f"{path}:{n}", json.loads(line)
        except ValueError as exc:
            raise InputError(f"{path}:{n}: not valid JSON ({exc.args[0][:60]})") from None
        except RecursionError:
            raise InputError(f"{path}:{n}: not valid JSON (nested too deeply)") from None


def _parquet_rows(path, label: str | None = None) -> Iterable[tuple[str, Any]]:
    """Rows of a Parquet file (a path, or its bytes in memory named ``label``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    label = label or str(path)
    try:
        table = pq.read_table(pa.BufferReader(path) if isinstance(path, bytes) else path)
    except Exception as exc:  # pyarrow raises several types for bad files
        raise InputError(f"{label}: not a readable Parquet file ({type(exc).__name__})") from None
    for i, row in enumerate(table.to_pylist()):
        yield f"{label} row {i}", row


def _dataset_rows(ds, label: str) -> Iterable[tuple[str, Any]]:
    for i, row in enumerate(ds):
        yield f"{label} row {i}", row


def _load_saved(path: Path, split: str):
    from datasets import Dataset, DatasetDict, load_from_disk

    try:
        ds = load_from_disk(str(path))
    except Exception as exc:
        raise InputError(f"{path}: not a dataset saved with save_to_disk ({type(exc).__name__})") from None
    if isinstance(ds, DatasetDict):
        if split not in ds:
            raise InputError(f"{path}: no split {split!r} (have: {', '.join(ds)})")
        ds = ds[split]
    assert isinstance(ds, Dataset)
    return ds


def _load_hf_cached(name: str, split: str):
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    from datasets import load_dataset

    try:
        return load_dataset(name, split=split)
    except Exception as exc:
        raise NotFoundError(f"dataset {name!r} (split {split}) is not in the local Hugging Face cache; "
                            "tgflow never downloads", hint="copy the dataset into the cache, or export it to JSONL "
                            "and use feed type jsonl") from exc


def _files_rows(files: dict[str, bytes], package: Path) -> Iterable[tuple[str, Any]]:
    """Rows of a data package's .jsonl and .parquet files, decrypted in memory (never to disk)."""
    names = sorted(n for n in files if n.endswith((".jsonl", ".parquet")))
    if not names:
        raise InputError("the data package holds no .jsonl or .parquet file")
    for n in names:
        label = f"{package}!{n}"
        yield from (_jsonl_lines(io.BytesIO(files[n]), label) if n.endswith(".jsonl") else _parquet_rows(files[n], label))


def _rows(feed: FeedSpec, base: Path, keyring, identities) -> tuple[Iterable[tuple[str, Any]], str, str | None]:
    """(rows with where each came from, the source as the spec names it, the data package's id)."""
    if feed.type == "hf":
        return _dataset_rows(_load_hf_cached(feed.uri, feed.split), feed.uri), f"hf:{feed.uri}[{feed.split}]", None
    path = resolve(base, feed.uri)
    if not path.exists():
        raise NotFoundError(f"feed {feed.type} {path} does not exist", hint="check feed.uri in the run spec")
    source = f"{feed.type}:{feed.uri}"  # as the spec says it: signed evidence never names this machine's folders
    if feed.type == "jsonl":
        return _jsonl_rows(path), source, None
    if feed.type == "parquet":
        return _parquet_rows(path), source, None
    if feed.type == "dataset":
        return _dataset_rows(_load_saved(path, feed.split), str(path)), source, None
    if keyring is None:  # tgsp: verified, then decrypted in memory
        raise InputError("a TGSP data feed needs the keyring's trust store")
    from tgsp.unpack import read_payload

    policy = keyring.trust_policy(kind="data", route=feed.route, min_version=feed.min_version)
    report, files = read_payload(path, policy, identities=identities or [])
    return _files_rows(files, path), source, report.package_id


def load_feed(feed: FeedSpec, base: Path, *, chat_template=None, keyring=None, identities=None) -> Feed:
    """Read every example of ``feed``. Paths resolve against ``base``."""
    rows, source, package_id = _rows(feed, base, keyring, identities)
    examples = []
    for where, row in rows:
        examples.append(row_to_example(row, where, feed.text_field, chat_template))
        if feed.max_examples and len(examples) >= feed.max_examples:
            break
    if not examples:
        raise InputError(f"feed {source} has no examples")
    digest = hashlib.sha256(encode([[e.prompt, e.target] for e in examples])).hexdigest()
    return Feed(examples, source, digest, package_id)
