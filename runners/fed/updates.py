"""The update package (kind ``update``; docs/format.md#12): layout, and the
aggregator's screening of a set of them.

    payload/modules.json               {"format": "tgflow.update-modules/1", "modules": [name, ...]}
    payload/delta/00000.safetensors    module 0's encoded deltas: A.* and B.* (compress.py); ffa: B.* only
    ...

The signed manifest's ``federation`` object says what the update belongs to
(route, round, base model, start adapter, LoRA settings, method), its weight,
its compression, and the digest of its module list, so the aggregator checks
everything before it decrypts a byte. An update's site is its trusted
signer's key lineage (the key's first version): a rotated site key is the
same site.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import tgsp
from tgsp.canonical import encode, parse, sha256_hex
from tgsp.errors import FormatError, InputError, NotFoundError, TgflowError
from tgsp.lineage import Lineage

from . import compress

FORMAT, KIND, INDEX, INDEX_FORMAT = "tgflow.update/1", "update", "modules.json", "tgflow.update-modules/1"
MAX_UPDATES = 512  # one open file per update while merging
MAX_EXAMPLES = 10 ** 12
MATCHED = ("format", "route", "round", "method", "base_model", "start", "lora", "modules_sha256")


def delta_file(k: int) -> str:
    return f"delta/{k:05d}.safetensors"


def split_factors(parts: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], int]:
    """A module file's encoded tensors by factor: ({part: array} of A, of B, and how many
    tensors were neither)."""
    by: dict[str, dict[str, Any]] = {"A": {}, "B": {}}
    other = 0
    for key, value in parts.items():
        factor, _, part = key.partition(".")
        if factor in by and part:
            by[factor][part] = value
        else:
            other += 1
    return by["A"], by["B"], other


class BadUpdate(InputError):
    """One screened update's payload cannot be used (it does not decode, or does not fit the
    start): the aggregation refuses that update and goes on with the rest (``without_bad``)."""

    def __init__(self, package_id: str, reason: str) -> None:
        super().__init__(f"update {package_id[:23]}: {reason}", hint="re-run without it")
        self.package_id, self.reason = package_id, reason


def read_or_refuse(reader, name: str, max_bytes: int) -> bytes:
    """A payload file of an update being merged or summed; any failure is that update's."""
    try:
        return reader.read(name, max_bytes=max_bytes)
    except TgflowError as exc:
        raise BadUpdate(reader.report.package_id, f"{name}: {exc}") from None


def index_ok(reader, names: list[str], files: set[str], what: str) -> None:
    """A package being merged or summed (a PayloadReader) holds exactly ``files`` (besides
    modules.json), and its modules.json lists ``names``; ``what`` names the files for the error."""
    pid = reader.report.package_id
    if set(reader.files) != {INDEX} | files:
        raise BadUpdate(pid, f"it holds other payload files than its {what}")
    try:  # strict JSON (no duplicate keys, no NaN), as every document we read
        index = parse(read_or_refuse(reader, INDEX, 64 << 20), what="modules.json")
    except FormatError:
        index = None
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT or index.get("modules") != names:
        raise BadUpdate(pid, "its module list does not match its manifest")


def without_bad(screened: Screening, attempt, check_quorum):
    """``attempt()`` over ``screened.accepted``; an update whose payload turns out unusable
    (BadUpdate) is refused and the attempt made again without it, while the quorum holds."""
    while True:
        try:
            return attempt()
        except BadUpdate as bad:
            s = next((s for s in screened.accepted if s.package_id == bad.package_id), None)
            if s is None:
                raise
            screened.accepted.remove(s)
            screened.refuse(s.path, bad.reason, s.package_id, s.site_name)
            check_quorum()


def modules_digest(names: list[str]) -> str:
    return sha256_hex(encode(names))


def lora_identity(lora) -> dict[str, Any]:
    tm = lora.target_modules
    return {"r": lora.r, "alpha": lora.alpha, "target_modules": tm if isinstance(tm, str) else sorted(tm)}


@dataclass
class Screened:
    path: Path
    package_id: str
    site: str  # the signer's key lineage root key id
    site_name: str
    weight: float  # before normalization
    manifest: dict[str, Any]
    report: Any  # the VerifyReport (kept for PayloadReader)

    @property
    def federation(self) -> dict[str, Any]:
        return self.manifest["federation"]

    def summary(self, normalized: float) -> dict[str, Any]:
        return {"update": self.package_id, "site": self.site_name, "site_key": self.site,
                "examples": self.federation.get("examples"), "weight": round(normalized, 9)}


@dataclass
class Screening:
    accepted: list[Screened] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)

    def refuse(self, path: Path, reason: str, package_id: str | None = None, site: str | None = None) -> None:
        self.refused.append({"path": str(path), "update": package_id, "site": site, "reason": reason})

    def drop_used(self, used: dict[str, str]) -> None:
        """Refuse, after all, the accepted updates that ``used`` (update id -> round) names."""
        for s in [s for s in self.accepted if s.package_id in used]:
            self.refuse(s.path, f"it was already aggregated (round {used[s.package_id]}): a replay", s.package_id,
                        s.site_name)
        self.accepted = [s for s in self.accepted if s.package_id not in used]


def _site_of(report) -> tuple[str, str]:
    s = next(s for s in report.manifest["signers"] if s["keyid"] in report.trusted_signers)
    return Lineage.from_dict(s["lineage"]).walk()[0].key.keyid, s["name"]


def _mismatch(fed: Any, want: dict[str, Any]) -> str | None:
    if not isinstance(fed, dict):
        return "its manifest has no federation section (not a tgflow update)"
    for key in MATCHED:
        if fed.get(key) != want[key]:
            return f"its {key.replace('_', ' ')} differs from this aggregation's ({_short(fed.get(key))} != {_short(want[key])})"
    return None


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def codec_of(fed: dict[str, Any]) -> compress.Codec | None:
    """The update's compression settings, or None if they are not ones this tgflow decodes."""
    c = fed.get("compression")
    if not isinstance(c, dict) or set(c) != {"quantize", "block", "topk"} or c["quantize"] not in ("int8-block", "none"):
        return None
    block, topk = c["block"], c["topk"]
    if not isinstance(block, int) or isinstance(block, bool) or not 16 <= block <= 65536:
        return None
    if topk is not None and (not isinstance(topk, (int, float)) or isinstance(topk, bool) or not 0 < topk < 1):
        return None
    return compress.Codec(c["quantize"], block, topk)


class PlainCheck:
    """The screening's body check for plaintext updates: a codec this tgflow decodes, and a
    weight (n2he updates have their own: runners/n2he/sum.py)."""

    def readable(self, fed: dict[str, Any]) -> str | None:
        if fed.get("he") is not None:
            return "it is an n2he update (CKKS ciphertexts): aggregate it with a privacy.mode \"n2he\" spec"
        return None if codec_of(fed) is not None else "its compression settings are not ones this tgflow decodes"

    def weight(self, fed: dict[str, Any], weights: str) -> float | str:
        """The update's weight before normalization, or why it has none."""
        if weights == "equal":
            return 1.0
        n = fed.get("examples")
        if n is None:
            return ("it carries no public example count (a dp site that set no federation.public_examples): "
                    "aggregate with --weights equal, or have the site declare one")
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_EXAMPLES:
            return f"its example count {_short(n)} is not a whole number from 1 to {MAX_EXAMPLES}"
        return float(n)


PLAIN = PlainCheck()


def _readable(m: dict[str, Any], recipient_ids: set[str], body) -> str | None:
    enc = m.get("encryption")
    ids = {r.get("keyid") for r in (enc or {}).get("recipients", [])}
    if enc is None:
        return "it is not encrypted: an update must be encrypted to the aggregator"
    if not ids & recipient_ids:
        return "it is not encrypted to this party's key (federation.aggregator, or the key holder's)"
    return body.readable(m["federation"])


def _check_one(path: Path, policy, want: dict[str, Any], weights: str, recipient_ids: set[str], out: Screening,
               body) -> None:
    try:
        report = tgsp.verify(path, policy)
    except NotFoundError:
        return out.refuse(path, "file not found")
    except TgflowError as exc:
        return out.refuse(path, str(exc))
    if not report.ok:
        bad = report.first_failure
        return out.refuse(path, f"{bad.name} check failed: {bad.detail}", report.package_id)
    pid, fed = report.package_id, report.manifest.get("federation")
    site, name = _site_of(report)
    why = _mismatch(fed, want) or _readable(report.manifest, recipient_ids, body)
    weight = body.weight(fed, weights) if why is None else why
    if isinstance(weight, str):
        return out.refuse(path, weight, pid, name)
    out.accepted.append(Screened(path, pid, site, name, weight, report.manifest, report))


def screen(paths: list[Path], policy, want: dict[str, Any], used: dict[str, str], weights: str,
           recipient_ids: set[str], body=PLAIN) -> Screening:
    """Verify every update against ``policy`` (the site allowlist, route, kind) and ``want``,
    and its body (``body``: PLAIN, or n2he's HECheck); refuse replays (``used``: update id ->
    the round it went into), repeats and second updates of a site. Each refusal names the
    update and the reason. Nothing of an update's payload is read here."""
    out = Screening()
    for path in paths[:MAX_UPDATES]:
        _check_one(Path(path), policy, want, weights, recipient_ids, out, body)
    for path in paths[MAX_UPDATES:]:
        out.refuse(Path(path), f"over the limit of {MAX_UPDATES} updates per aggregation")
    out.drop_used(used)  # before one-per-site: last week's update of a site is a replay, not a second update
    _one_per_site(out)
    return out


def _one_per_site(out: Screening) -> None:
    by_id: dict[str, Screened] = {}
    by_site: dict[str, list[Screened]] = {}
    for s in out.accepted:
        if s.package_id in by_id:
            out.refuse(s.path, f"the same update is also given as {by_id[s.package_id].path}", s.package_id, s.site_name)
            continue
        by_id[s.package_id] = s
        by_site.setdefault(s.site, []).append(s)
    keep = []
    for site_updates in by_site.values():
        if len(site_updates) == 1:
            keep += site_updates
            continue
        for s in site_updates:  # which one is genuine is not for the aggregator to guess: refuse them all
            out.refuse(s.path, f"site {s.site_name} sent {len(site_updates)} different updates for this round",
                       s.package_id, s.site_name)
    out.accepted = sorted(keep, key=lambda s: s.package_id)  # a fixed order: the merge is reproducible


@dataclass
class Body:
    """What an update carries besides its module list: the plaintext deltas (compress.py), or
    CKKS ciphertexts (runners/n2he/site.py)."""

    federation: dict[str, Any]  # manifest fields this body adds
    files: Callable[[], dict[str, bytes]]  # the payload files by package path, in memory
    recipients: list[Any]  # public keys the update is encrypted to besides the aggregator
    privacy: dict[str, Any]  # the manifest's privacy record
    report: dict[str, Any] = field(default_factory=dict)  # added to the site's own report (never the package)
    after: Callable[[], None] = lambda: None  # run once the update is written (the top-k residual)
