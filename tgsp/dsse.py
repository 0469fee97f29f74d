"""DSSE envelopes (https://github.com/secure-systems-lab/dsse), v1.

Signatures cover PAE(payloadType, payload), never the JSON around it. The
envelope is strict: exactly the three DSSE fields, canonical base64, and no
two signatures under one key id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .canonical import b64d, b64e
from .errors import FormatError

MANIFEST_TYPE = "application/vnd.tgflow.tgsp.manifest+json"
ROTATION_TYPE = "application/vnd.tgflow.key-rotation+json"
REVOCATION_TYPE = "application/vnd.tgflow.key-revocation+json"


def pae(payload_type: str, payload: bytes) -> bytes:
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


@dataclass(frozen=True)
class Envelope:
    payload_type: str
    payload: bytes
    signatures: tuple[tuple[str, bytes], ...]  # (keyid, sig) in envelope order

    def to_dict(self) -> dict[str, Any]:
        return {
            "payload": b64e(self.payload),
            "payloadType": self.payload_type,
            "signatures": [{"keyid": k, "sig": b64e(s)} for k, s in self.signatures],
        }

    def sig_map(self) -> dict[str, bytes]:
        return dict(self.signatures)


def parse(obj: Any, *, expect_type: str, max_signatures: int = 64) -> Envelope:
    if not isinstance(obj, dict) or set(obj) != {"payload", "payloadType", "signatures"}:
        raise FormatError("DSSE envelope must have exactly payload, payloadType and signatures")
    if obj["payloadType"] != expect_type:
        raise FormatError(f"DSSE payloadType is {obj['payloadType']!r}, expected {expect_type!r}")
    sigs = obj["signatures"]
    if not isinstance(sigs, list) or len(sigs) > max_signatures:
        raise FormatError("DSSE signatures must be a list of at most %d entries" % max_signatures)
    out: list[tuple[str, bytes]] = []
    seen: set[str] = set()
    for entry in sigs:
        if not isinstance(entry, dict) or set(entry) != {"keyid", "sig"} or not isinstance(entry["keyid"], str):
            raise FormatError("each DSSE signature must be {keyid, sig}")
        if entry["keyid"] in seen:
            raise FormatError(f"two signatures under key id {entry['keyid'][:16]}")
        seen.add(entry["keyid"])
        out.append((entry["keyid"], b64d(entry["sig"], what="signature")))
    return Envelope(expect_type, b64d(obj["payload"], what="DSSE payload"), tuple(out))
