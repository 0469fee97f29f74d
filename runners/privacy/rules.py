"""Spec rules of the privacy modes that need no training stack: export and validate read
them without importing torch (runners/privacy/modes.py applies them to a round)."""

from __future__ import annotations

from tgsp.errors import InputError


def check_n2he(spec) -> None:
    """n2he is secure aggregation of federated updates, and only sums are computed under
    encryption, so the update must be linear in what is summed: ffa's B (docs/n2he.md)."""
    fed = spec.federation
    if fed is None:
        raise InputError("privacy.mode \"n2he\" encrypts a federated site's update: the spec has no federation "
                         "section", hint="add federation (docs/federated.md), or use privacy.mode \"dp\" or \"off\"")
    if fed.method != "ffa":
        raise InputError("privacy.mode \"n2he\" needs federation.method \"ffa\": under encryption only sums are "
                         "computed, and exact merging multiplies B by A", hint="set federation.method to \"ffa\"")
    if fed.compression.topk is not None:
        raise InputError("federation.compression.topk is not available with privacy.mode \"n2he\": ciphertexts "
                         "are dense", hint="remove compression.topk")
