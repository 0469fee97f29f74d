"""What an n2he update and an n2he sum hold (docs/format.md#13), and the checks on their
manifests. Pure: no TenSEAL, no I/O.

    payload/modules.json       as in every update: the module names, in order
    payload/he/00000.ct        ciphertext 0: values [0, slots) of the update vector
    ...

The update vector is the concatenation, module by module in modules.json's order,
of w * clip(ΔB) flattened row-major (ffa: A is frozen, only B moves), where w is the
site's public weight and clip scales all of ΔB together to L2 norm at most C.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..fed import start as start_mod
from . import ckks

LAYOUT = "tgflow.he-ffa-delta-b/1"
SUM_FORMAT, SUM_KIND = "tgflow.he-sum/1", "he-sum"
MAX_WEIGHT = 10 ** 9


def ct_file(k: int) -> str:
    return f"he/{k:05d}.ct"


def shapes(start: dict, names: list[str]) -> list[tuple[int, ...]]:
    return [tuple(start[n + start_mod.B_SUFFIX].shape) for n in names]


def values_count(start: dict, names: list[str]) -> int:
    return int(sum(np.prod(s) for s in shapes(start, names)))


def update_vector(start: dict, final: dict, names: list[str]) -> np.ndarray:
    """ΔB of every module, concatenated (float64)."""
    return np.concatenate([(final[n + start_mod.B_SUFFIX] - start[n + start_mod.B_SUFFIX]).double().numpy().ravel()
                           for n in names]) if names else np.zeros(0)


def clip(vec: np.ndarray, bound: float) -> tuple[np.ndarray, float]:
    """``vec`` scaled to L2 norm at most ``bound``; and its norm before."""
    norm = float(np.linalg.norm(vec))
    return (vec * (bound / norm) if norm > bound else vec), norm


def split(vec: np.ndarray, start: dict, names: list[str]) -> dict[str, Any]:
    """The vector back into ΔB tensors, by peft name (float32 torch tensors)."""
    import torch

    out, at = {}, 0
    for name, shape in zip(names, shapes(start, names)):
        size = int(np.prod(shape))
        out[name + start_mod.B_SUFFIX] = torch.from_numpy(vec[at:at + size].reshape(shape).astype(np.float32))
        at += size
    return out


def he_section(params: ckks.Params, context_id: str, n: int, weight: int, bound: float, custody: str) -> dict[str, Any]:
    return {"layout": LAYOUT, "context": context_id, "params": params.to_dict(), "values": n,
            "ciphertexts": ckks.chunks_for(n, params), "weight": weight, "max_update_norm": bound, "custody": custody}


def _positive_int(v: Any, top: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= top


def he_mismatch(fed: dict[str, Any], context_id: str, params: ckks.Params, n: int) -> str | None:
    """Why an update's ``he`` section does not fit this aggregation, or None."""
    he = fed.get("he")
    if not isinstance(he, dict):
        return "it is not an n2he update (no he section): this aggregation sums ciphertexts"
    why = ciphertexts_mismatch(he, context_id, params, n)
    c = he.get("max_update_norm")
    if why is None and (not _positive_int(he.get("weight"), MAX_WEIGHT) or not isinstance(c, (int, float))
                        or isinstance(c, bool) or not 0 < c <= 1e6):
        why = "its weight or clipping bound is missing or out of range"
    return why


def ciphertexts_mismatch(he: dict[str, Any], context_id: str, params: ckks.Params, n: int) -> str | None:
    """Why the ciphertexts an ``he`` section (of an update or a sum) describes are not this
    context's n values, or None."""
    if he.get("layout") != LAYOUT:
        return "its he layout is not one this tgflow sums"
    if he.get("context") != context_id:
        return (f"it was encrypted under another HE context ({str(he.get('context'))[:23]}, not "
                f"{context_id[:23]}): the site holds a different or rotated key holder's public context")
    if he.get("params") != params.to_dict():
        return "its HE parameters differ from the context's"
    if he.get("values") != n or he.get("ciphertexts") != ckks.chunks_for(n, params):
        return f"it holds {he.get('values')} values in {he.get('ciphertexts')} ciphertexts, not the start's {n}"
    return None


def he_weight(fed: dict[str, Any], weights: str) -> float | str:
    """The weight the site already multiplied in, if it is the one ``weights`` asks for."""
    w = fed["he"]["weight"]
    if weights == "equal" and w != 1:
        return f"it was pre-weighted by {w} (its example count): aggregate with --weights examples"
    if weights == "examples" and (fed.get("examples") != w):
        return ("it was pre-weighted by 1, not by an example count: aggregate with --weights equal"
                if w == 1 else "its pre-weight is not its declared example count")
    return float(w)


def norm_bound(feds: list[dict[str, Any]]) -> float:
    """The largest L2 norm (so also |value|) a sum of these clipped, weighted updates can have."""
    return sum(f["he"]["weight"] * f["he"]["max_update_norm"] for f in feds)


def range_problem(top: float, params: ckks.Params) -> str | None:
    """CKKS decodes a sum only below params.max_abs."""
    if top >= params.max_abs:
        return (f"the sum could reach {top:.4g}, over the {params.max_abs:.4g} these CKKS parameters decode: "
                f"lower privacy.n2he.max_update_norm, or weight equally")
    return None
