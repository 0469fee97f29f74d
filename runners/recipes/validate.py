"""`tgflow peft validate`: every check a round makes before training, at once.

Each check runs on its own and reports its problem, so one call lists
everything wrong with a spec, its model, feeds, keys and output location.
Nothing is trained or written and no passphrase is needed. A ``tgsp`` data
feed is verified and opened like a round would, into a temporary folder that
is removed afterwards.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from tgsp.errors import InputError, TgflowError

from ..data import feeds as feeds_mod
from ..learn import model as model_mod
from ..n2he import context
from ..privacy.rules import check_n2he
from ..stages.inputs import check_recipients, check_round, open_round
from .round import privacy_budget
from ..state.store import RouteStore


def _output_writable(out: Path) -> str:
    probe = out.parent
    while not probe.exists():  # the folder is created on the run: check its nearest ancestor
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"output {out}: {probe} is not a writable folder")
    return f"output {out} can be written"


def _state(opened) -> str:
    store = RouteStore(opened.state, opened.spec.route_key).view()  # reads (and checks) the log; locks nothing
    return f"route state in {opened.state} ({len(store.releases())} release(s) logged)"


def _model(spec, base: Path) -> str:
    folder = model_mod.resolve_model(spec.base_model_ref, base)
    missing = [n for n in ("config.json",) if not (folder / n).is_file()]
    if missing:
        raise InputError(f"base model {folder} has no {', '.join(missing)}")
    model_mod.load_tokenizer(folder)
    return f"base model {folder}"


def _keys(spec, keyring) -> str:
    pub = keyring.public_file(spec.output.signing_key)
    if pub.kind != "signing" or not (keyring.home / "keys" / f"{pub.name}.json").exists():
        raise InputError(f"output.signing_key {spec.output.signing_key!r} is not an own signing key in {keyring.home}")
    check_recipients(spec, keyring)  # as peft run checks them
    return f"signing key {pub.name} and {len(spec.output.recipients)} recipient(s)"


def _federation(spec, keyring) -> str:
    fed = spec.federation
    agg = keyring.resolve_public(fed.aggregator)
    role = "site" if spec.feed is not None else "aggregator (no feed)"
    for site in fed.sites:
        keyring.resolve_public(site)
    return (f"round {fed.round}, {fed.method}, {role}: updates encrypted to {fed.aggregator} ({agg.keyid[:16]}); "
            f"{len(fed.sites)} trusted site keys")


def _n2he(spec, keyring) -> str:
    check_n2he(spec)
    n2he = spec.privacy.n2he
    pub = context.public(keyring, n2he.context, max_age_days=n2he.max_key_age_days)
    p = pub.params
    holder = f", key holder {n2he.key_holder}" if n2he.key_holder else ""
    if n2he.key_holder:
        keyring.resolve_public(n2he.key_holder)
    return (f"HE context {pub.file.name} v{pub.file.version} ({pub.id[7:23]}): CKKS N={p.poly_modulus_degree}, "
            f"log Q={p.log_q} (128-bit), {n2he.custody} custody{holder}, clip {n2he.max_update_norm:g}")


def _round(spec, keyring) -> str:
    check_round(spec, keyring)  # the very function peft run calls before its lock
    role = "federated site" if spec.federation is not None else "local"
    return f"{role} round, privacy {spec.privacy.mode}, training from {spec.training.init}"


def _budget(spec_path, keyring, input_root, output_root) -> str:
    budget = privacy_budget(spec_path, keyring, input_root=input_root, output_root=output_root)
    nxt, spent = budget["next_round"], budget["route_epsilon"]
    if nxt["steps_within_budget"] == 0:
        raise InputError(f"privacy budget exhausted: the route has spent epsilon {spent:g} of "
                         f"{budget['route_budget_epsilon']:g}, and not one more step fits; peft run would exit 13",
                         hint="see tgflow peft budget; a new budget is a policy decision, not a fix")
    return (f"epsilon {spent:g} spent; the next round on {nxt['examples']} examples: {nxt['outcome']} "
            f"(sigma {nxt['noise_multiplier']:.4g}, epsilon {nxt['epsilon']:.4g})")


def validate(spec_path: str | Path, keyring, *, input_root: Path | None = None,
             output_root: Path | None = None) -> dict[str, Any]:
    """{"ok", "checks": [{name, ok, detail}]}; a bad spec file itself raises InputError."""
    opened = open_round(spec_path, input_root, output_root)  # the inputs stage's own opening
    spec, base = opened.spec, opened.base
    checks: list[tuple[str, Callable[[], str]]] = [
        ("round", lambda: _round(spec, keyring)),
        ("output", lambda: _output_writable(opened.out_path)),
        ("state", lambda: _state(opened)),
        ("keys", lambda: _keys(spec, keyring)),
        ("model", lambda: _model(spec, base)),
    ]
    for name in ("feed", "reference", "eval"):
        feed = getattr(spec, name)
        if feed is not None:
            checks.append((name, lambda f=feed: f"{len(feeds_mod.load_feed(f, base, keyring=keyring).examples)} examples"))
    if spec.federation is not None:
        checks.append(("federation", lambda: _federation(spec, keyring)))
    if spec.privacy.trains_with_dp and spec.feed is not None:
        checks.append(("privacy budget", lambda: _budget(spec_path, keyring, input_root, output_root)))
    if spec.privacy.mode == "n2he":
        checks.append(("n2he", lambda: _n2he(spec, keyring)))
    results = []
    for name, fn in checks:
        try:
            results.append({"name": name, "ok": True, "detail": fn()})
        except TgflowError as exc:
            results.append({"name": name, "ok": False, "detail": str(exc), "hint": exc.hint})
    return {"ok": all(r["ok"] for r in results), "route": spec.route_key, "checks": results}
