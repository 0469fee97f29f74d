"""tgflow route ...: a route's registry: register, evaluate, promote, roll back, resolve."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.table import Table

from tgsp.errors import InputError

from .flags import OutputFormat
from .common import config, emit, emit_json, keyring, output_format, passphrase, short
from . import oci_access, resolve_run
from .materialize_cmd import materialize
from .oci_access import CaFile, PasswordFile as RegistryPasswordFile, PlainHttp, Username
from .resolve_run import open_registry
from .stdio import no_dash
from .term import cells, say, show

app = typer.Typer(no_args_is_help=True, help="A route's registry: register, evaluate, promote, roll back, resolve and materialize adapters.")

Registry = typer.Option(None, "--registry", metavar="DIR|oci://HOST/REPO", help="The registry: a folder, or an OCI registry repository (default: the --spec's output folder's registry/, then [route] registry in config.toml).")
SpecOpt = typer.Option(None, "--spec", help="Take the registry (and route state) from this run spec.", dir_okay=False)
Json = typer.Option(False, "--json", help="Print machine-readable JSON.")
SigningKey = typer.Option(None, "--signing-key", metavar="KEY", help="Key that signs the new index version (default: [route] signing_key in config.toml).")
PassFile = typer.Option(None, "--passphrase-file", help="Passphrase for the keys (else TGFLOW_PASSPHRASE, TGFLOW_PASSPHRASE_FILE, or a prompt).", dir_okay=False)
Alias = typer.Option("production", "--alias", help="The alias to move.")


def _signer(name: str | None, passphrase_file: Path | None):
    name = name or config().get("route", "signing_key")
    if not name:
        raise InputError("no signing key for the route index", hint="pass --signing-key KEY (or set [route] signing_key in config.toml)")
    return keyring().signer(name, passphrase(passphrase_file, key=name))


def _versions(doc: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for alias, target in doc["aliases"].items():
        out.setdefault(target["package_id"], []).append(alias)
    return out


@app.command("list")
def list_(registry: Optional[str] = Registry, plain_http: bool = PlainHttp, ca_file: Optional[Path] = CaFile,
    username: Optional[str] = Username, registry_password_file: Optional[Path] = RegistryPasswordFile, spec: Optional[Path] = SpecOpt, json_out: bool = Json,
          fmt: Optional[str] = OutputFormat) -> None:
    """Every route in the registry, with what its aliases name.

    Example: tgflow route list --registry demo-out/registry
    """
    oci_access.use(plain_http, ca_file, username, registry_password_file)
    reg = open_registry(registry, spec)
    rows = []
    for route in reg.routes():
        doc = reg.require(route)
        rows.append({"route": route, "index_version": doc["version"], "expires": doc["expires"],
                     "packages": len(doc["packages"]),
                     "aliases": {a: t["version"] for a, t in sorted(doc["aliases"].items())}})
    if fmt := output_format(fmt, json_out):
        return emit({"registry": str(reg.root), "routes": rows}, fmt)
    if not rows:
        return say(f"no routes in {reg.root}")
    table = Table("route", "index", "expires", "packages", "aliases")
    for r in rows:
        table.add_row(*cells(r["route"], f"v{r['index_version']}", r["expires"], r["packages"],
                             ", ".join(f"{a}=v{v}" for a, v in r["aliases"].items())))
    show(table)


@app.command("show")
def show_(route: str = typer.Argument(..., help="The route key."), registry: Optional[str] = Registry, plain_http: bool = PlainHttp, ca_file: Optional[Path] = CaFile,
    username: Optional[str] = Username, registry_password_file: Optional[Path] = RegistryPasswordFile,
          spec: Optional[Path] = SpecOpt, json_out: bool = Json, fmt: Optional[str] = OutputFormat) -> None:
    """The route's verified index: its aliases and every registered version with its evaluation.

    Example: tgflow route show support --registry demo-out/registry
    """
    oci_access.use(plain_http, ca_file, username, registry_password_file)
    doc = open_registry(registry, spec).require(route)
    if fmt := output_format(fmt, json_out):
        return emit(doc, fmt)
    say(f"route {route}: index v{doc['version']}, issued {doc['issued']}, expires {doc['expires']}")
    names = _versions(doc)
    table = Table("version", "package", "aliases", "registered", "exact match", "choice acc.")
    for e in doc["packages"]:
        ev = (e.get("evaluation") or {}).get("round") or {}
        table.add_row(*cells(e["version"], short(e["package_id"][7:]), ", ".join(names.get(e["package_id"], [])),
                             e["registered"], ev.get("exact_match", "-"), ev.get("choice_accuracy", "-")))
    show(table)


@app.command()
def history(route: str = typer.Argument(..., help="The route key."), registry: Optional[str] = Registry, plain_http: bool = PlainHttp, ca_file: Optional[Path] = CaFile,
    username: Optional[str] = Username, registry_password_file: Optional[Path] = RegistryPasswordFile,
            spec: Optional[Path] = SpecOpt, json_out: bool = Json, fmt: Optional[str] = OutputFormat) -> None:
    """Every change to the route's index (register, eval, promote, rollback); with --spec,
    also the route log's rounds and their outcomes.

    Example: tgflow route history support --spec examples/run_spec.json
    """
    oci_access.use(plain_http, ca_file, username, registry_password_file)
    doc = open_registry(registry, spec).require(route)
    rounds = _rounds(spec) if spec else []
    if fmt := output_format(fmt, json_out):
        return emit({"route": route, "index": doc["history"], "rounds": rounds}, fmt)
    table = Table("index", "when", "action", "alias", "version", "by")
    for h in doc["history"]:
        table.add_row(*cells(f"v{h['index_version']}", h["at"], h["action"], h["alias"] or "-", h["version"], h["by"]))
    show(table)
    for r in rounds:
        say(f"round {r['time']}: {r['outcome']}" + (f", version {r['version']}" if r.get("version") else ""))


def _rounds(spec: Path) -> list[dict[str, Any]]:
    from runners.stages.inputs import open_round
    from runners.state.store import ROUND, RouteStore

    opened = open_round(spec, None, None)
    store = RouteStore(opened.state, opened.spec.route_key).view()
    return [{"time": r["time"], **r["data"]} for r in store.records if r["type"] == ROUND]


@app.command()
def register(
    package: Path = typer.Argument(..., help="The adapter package to register.", dir_okay=False),
    alias: str = typer.Option("candidate", "--alias", help="Point this alias at it."),
    registry: Optional[str] = Registry, plain_http: bool = PlainHttp, ca_file: Optional[Path] = CaFile,
    username: Optional[str] = Username, registry_password_file: Optional[Path] = RegistryPasswordFile, spec: Optional[Path] = SpecOpt, signing_key: Optional[str] = SigningKey,
    passphrase_file: Optional[Path] = PassFile, json_out: bool = Json,
) -> None:
    """Verify a package, copy it into the registry and list it (peft run does this itself, as candidate).

    Example: tgflow route register demo-out/support.tgsp --registry demo-out/registry --signing-key release
    """
    oci_access.use(plain_http, ca_file, username, registry_password_file)
    reg = open_registry(registry, spec, create=True)
    entry = reg.register(package, _signer(signing_key, passphrase_file), alias=alias)
    if json_out:
        return emit_json(entry)
    say(f"registered version {entry['version']} ({entry['package_id'][:23]}) as {alias}")


@app.command("eval")
def eval_(
    route: str = typer.Argument(..., help="The route key."),
    candidate: int = typer.Option(..., "--candidate", metavar="VERSION", help="The registered version to evaluate."),
    against: str = typer.Option("production", "--against", help="An alias or a VERSION to compare with."),
    eval_feed: Path = typer.Option(..., "--eval", metavar="FEED", help="JSONL eval feed (prompt/completion rows).", dir_okay=False),
    identity: Optional[List[str]] = typer.Option(None, "--identity", help="Recipient key to decrypt the adapters with: a name in the keyring, or a key file (mode 600). Repeatable."),
    base_model: Optional[Path] = typer.Option(None, "--base-model", help="Base model folder (default: the one the evidence names).", file_okay=False),
    registry: Optional[str] = Registry, plain_http: bool = PlainHttp, ca_file: Optional[Path] = CaFile,
    username: Optional[str] = Username, registry_password_file: Optional[Path] = RegistryPasswordFile, spec: Optional[Path] = SpecOpt, signing_key: Optional[str] = SigningKey,
    passphrase_file: Optional[Path] = PassFile, json_out: bool = Json,
) -> None:
    """Both adapters on the same data with task metrics (exact match, choice accuracy, loss);
    the result is recorded in a new index version. A candidate that regressed cannot be
    promoted without --force.

    Example: tgflow route eval support --candidate 2 --against production --eval examples/feeds/support-eval-2.jsonl --identity operator --registry demo-out/registry --signing-key release
    """
    from runners.spec import FeedSpec
    from runners.recipes.trial import evaluate

    oci_access.use(plain_http, ca_file, username, registry_password_file)
    reg = open_registry(registry, spec)
    signer = _signer(signing_key, passphrase_file)
    pp = passphrase(passphrase_file, key=", ".join(identity or []) or None)
    idents = [k for name in identity or [] for k in keyring().identities(name, pp)]
    result = evaluate(reg, route, candidate, against, FeedSpec(type="jsonl", uri=str(eval_feed)), idents,
                      base_model=base_model)
    reg.record_evaluation(route, candidate, {"against": result["against"] | {"candidate": result["candidate"]},
                                             "eval": result["eval"]}, signer)
    if json_out:
        return emit_json(result)
    for name in ("candidate", "against"):
        r = result[name]
        say(f"{name} v{r['version']}: exact match {r.get('exact_match', '-')}, choice accuracy "
            f"{r.get('choice_accuracy', '-')}, loss {r['loss']}")
    say("regressed: " + str(result["against"]["regression"]) if result["against"]["regressed"] else "no regression")


@app.command()
def promote(
    route: str = typer.Argument(..., help="The route key."),
    version: Optional[str] = typer.Argument(None, metavar="[VERSION]", help="A registered version number, 'latest', or an alias's name (e.g. candidate)."),
    from_: Optional[str] = typer.Option(None, "--from", metavar="ALIAS", help="Promote what this alias names now (same as giving its name as VERSION)."),
    alias: str = Alias, force: bool = typer.Option(False, "--force", help="Promote even if its last evaluation regressed."),
    registry: Optional[str] = Registry, plain_http: bool = PlainHttp, ca_file: Optional[Path] = CaFile,
    username: Optional[str] = Username, registry_password_file: Optional[Path] = RegistryPasswordFile, spec: Optional[Path] = SpecOpt, signing_key: Optional[str] = SigningKey,
    passphrase_file: Optional[Path] = PassFile, json_out: bool = Json,
) -> None:
    """Point an alias (production by default) at a registered version, in a new signed index version.

    Example: tgflow route promote support 1 --registry demo-out/registry --signing-key release
    (or: ... promote support latest, ... promote support --from candidate)
    """
    if (version is None) == (from_ is None):
        raise InputError("give the version to promote once: VERSION (a number, latest, an alias) or --from ALIAS")
    oci_access.use(plain_http, ca_file, username, registry_password_file)
    reg = open_registry(registry, spec)
    entry = reg.promote(route, version or from_, _signer(signing_key, passphrase_file), alias=alias, force=force)
    _moved(reg, route, alias, entry, json_out)


@app.command()
def rollback(
    route: str = typer.Argument(..., help="The route key."),
    to: Optional[int] = typer.Option(None, "--to", metavar="VERSION", help="Version to go back to (default: what the alias named before)."),
    alias: str = Alias, registry: Optional[str] = Registry, plain_http: bool = PlainHttp, ca_file: Optional[Path] = CaFile,
    username: Optional[str] = Username, registry_password_file: Optional[Path] = RegistryPasswordFile, spec: Optional[Path] = SpecOpt,
    signing_key: Optional[str] = SigningKey, passphrase_file: Optional[Path] = PassFile, json_out: bool = Json,
) -> None:
    """Move an alias back to an older package, in a new (higher) index version: consumers pin
    the index version, so this never trips their package rollback floor.

    Example: tgflow route rollback support --registry demo-out/registry --signing-key release
    """
    oci_access.use(plain_http, ca_file, username, registry_password_file)
    reg = open_registry(registry, spec)
    entry = reg.rollback(route, _signer(signing_key, passphrase_file), to=to, alias=alias)
    _moved(reg, route, alias, entry, json_out)


@app.command()
def refresh(
    route: str = typer.Argument(..., help="The route key."),
    days: Optional[int] = typer.Option(None, "--days", min=1, max=3660, help="The new index's lifetime (default: $TGFLOW_INDEX_DAYS, [route] index_days in config.toml, or 30)."),
    revive: bool = typer.Option(False, "--revive", help="Re-sign an index that has already expired (check route history first: it may be an old one restored)."),
    registry: Optional[str] = Registry, plain_http: bool = PlainHttp, ca_file: Optional[Path] = CaFile,
    username: Optional[str] = Username, registry_password_file: Optional[Path] = RegistryPasswordFile, spec: Optional[Path] = SpecOpt, signing_key: Optional[str] = SigningKey,
    passphrase_file: Optional[Path] = PassFile, json_out: bool = Json,
) -> None:
    """Re-sign the route index with a new expiry, changing nothing else: a route with no new
    round keeps its deploy jobs resolving. Run it on a schedule shorter than the lifetime.

    Example: tgflow route refresh support --registry demo-out/registry --signing-key release
    """
    oci_access.use(plain_http, ca_file, username, registry_password_file)
    reg = open_registry(registry, spec)
    if days is not None:
        reg.days = days
    doc = reg.refresh(route, _signer(signing_key, passphrase_file), revive=revive)
    if json_out:
        return emit_json({"route": route, "index_version": doc["version"], "issued": doc["issued"],
                          "expires": doc["expires"]})
    say(f"route {route}: index v{doc['version']} re-signed; it expires at {doc['expires']}")


def _moved(reg, route: str, alias: str, entry: dict[str, Any], json_out: bool) -> None:
    doc = reg.require(route)
    if json_out:
        return emit_json({"route": route, "alias": alias, "version": entry["version"],
                          "package_id": entry["package_id"], "index_version": doc["version"]})
    say(f"{route}: {alias} -> version {entry['version']} ({entry['package_id'][:23]}), index v{doc['version']}")


@app.command()
def resolve(
    route: str = typer.Argument(..., help="The route key."), alias: str = typer.Option("production", "--alias", help="The alias to resolve."),
    state: Optional[Path] = typer.Option(None, "--state", help="Consumer state: refuse an older (replayed), forked or expired index than last accepted, and record this one.", dir_okay=False),
    trusted: Optional[List[str]] = typer.Option(None, "--trusted", help="Trust only these keys (names or public key files). Repeatable."),
    registry: Optional[str] = Registry, plain_http: bool = PlainHttp, ca_file: Optional[Path] = CaFile,
    username: Optional[str] = Username, registry_password_file: Optional[Path] = RegistryPasswordFile, spec: Optional[Path] = SpecOpt, json_out: bool = Json,
) -> None:
    """Verify the index and the package the alias names; print its path, id and version.

    Exit codes: 0 resolved, and it changed since --state (or no --state); 20 unchanged;
    1 refused (bad signature, replayed, forked or expired index, package fails verification).

    Example: tgflow route resolve support --registry demo-out/registry --state deploy-state.json --json
    """
    oci_access.use(plain_http, ca_file, username, registry_password_file)
    code = resolve_run.resolve_alias(route, alias, state, trusted, registry, spec, json_out)
    if code:
        raise typer.Exit(code)


@app.command("repair-log")
def repair_log(
    route: str = typer.Argument(..., help="The route key."),
    state: Path = typer.Option(..., "--state", help="The route's state folder (output.state_dir, default <output dir>/.tgflow-state/<route>).", file_okay=False),
    json_out: bool = Json,
) -> None:
    """Re-record the head of a route log you vouch is complete (its log.head.json is missing or
    stale, e.g. after restoring the log alone). The log's own hash chain is checked first; a
    log cut short cannot be told from a complete one here, so restore from a backup when in doubt.

    Example: tgflow route repair-log support --state demo-out/.tgflow-state/support
    """
    no_dash(state, "the route's state folder", "--state")
    from runners.state.store import RouteStore

    store = RouteStore(state, route)
    with store.session("route repair-log", open_log=False):
        done = store.repair_head()
    if json_out:
        return emit_json({"route": route, "state": str(state), **done})
    say(f"route log of {route}: {done['entries']} entries, head {done['head'][:16]} recorded in log.head.json")


app.command("materialize")(materialize)
