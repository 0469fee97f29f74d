"""Export a run spec as native, validated job definitions for external platforms.

``export`` is pure: spec + options in, a dict of file name -> document out.
``write`` puts them on disk. ``check`` runs the platform's own offline
validator (the ``export-check`` extra) and our checks for what it misses.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import stat
from pathlib import Path
from typing import Any, Sequence

from tgsp.atomic import prepare_parent, write_bytes
from tgsp.errors import InputError

from ..privacy.rules import check_n2he
from ..spec import RunSpec
from . import jobspec, secrets, serve, values
from .jobspec import Aggregation, ExportOptions, render
from .serve import Serving

BACKENDS = ("k8s", "sagemaker", "vertex", "azureml", "databricks")


def _module(backend: str):
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return importlib.import_module(f"{__name__}.{backend}")


def _check_federated(spec: RunSpec, agg: Aggregation | None) -> None:
    """What the aggregator's or key holder's job needs. n2he runs embedded (TenSEAL is in the
    runner image): no export references a sidecar (docs/adr/0012-n2he-secure-aggregation.md)."""
    if spec.privacy.mode == "n2he":
        check_n2he(spec)
    if agg is None:
        return
    he = spec.privacy.mode == "n2he"
    releases = agg.decrypt_from is not None or not he
    if spec.federation is None or (releases and spec.eval is None):
        raise InputError(f"{'a key holder' if agg.decrypt_from else 'an aggregation'} job needs a run spec with a "
                         f"federation section{' and an eval feed' if releases else ''}",
                         hint="export the aggregator's or key holder's spec (docs/federated.md, docs/n2he.md)")
    if agg.decrypt_from is not None and not he:
        raise InputError("--decrypt-from exports the n2he key holder's job: the spec's privacy.mode is not \"n2he\"")
    if he and agg.quorum < 2:
        raise InputError("--quorum must be at least 2 under privacy.mode \"n2he\": a sum of one update is that update")
    jobspec.check_updates_dir(agg.updates)
    if agg.decrypt_from is not None:
        jobspec.check_updates_dir(agg.sum, "--sum", "sum.tgsp")


def export(spec: RunSpec, backend: str, options: ExportOptions, passphrase_files: Sequence[str] = (),
           serving: Serving | None = None) -> dict[str, Any]:
    """Native documents for ``backend``, plus run_spec.json and job_spec.json. ``passphrase_files``:
    where else this machine keeps the passphrase (config.toml), so it is never written out. With
    ``serving`` (k8s only), a Deployment and Service that serve the route's production adapter."""
    module = _module(backend)
    if serving is not None:
        serve.refuse_backend(backend, serving)
    _known_settings(backend, serve.SETTINGS if serving else module.SETTINGS, options.settings)
    _check_federated(spec, options.aggregate)
    jobspec.check_scale(options)
    values.check_options(spec, options)  # every value as what it is, before a backend parses it
    files = serve.export(spec, options, serving) if serving else module.export(spec, options)
    files["run_spec.json"] = spec.model_dump(mode="json")
    secrets.check(files, where=backend)
    secrets.check_not_passphrase(files, where=backend, files=passphrase_files)
    return dict(sorted(files.items()))


def _known_settings(backend: str, known: frozenset[str], given: dict[str, str]) -> None:
    for key in sorted(given):
        if key not in known:
            near = difflib.get_close_matches(key, sorted(known), n=1)
            raise InputError(f"--set {key}: the {backend} backend has no such setting"
                             + (f"; did you mean {near[0]}?" if near else ""),
                             hint=f"its settings: {', '.join(sorted(known))} (docs/export.md#{backend})")


def check(backend: str, files: dict[str, Any]) -> list[str]:
    """Run the validators; returns what was checked. Raises on invalid output."""
    try:
        return (serve if serve.DEPLOYMENT in files else _module(backend)).check(files)
    except ImportError as exc:
        raise InputError(f"--check needs the {backend} validator ({exc.name}), which is not installed",
                         hint="pip install 'tgflow[export-check]'") from None


# The files an export wrote, one name a line, so a re-export removes its own stale ones. Not
# .json or .yaml: `kubectl apply -f DIR` would try to apply it.
RECORD = ".tgflow-export.list"


# What an export can have written: a plain job file name. A record naming anything else (a
# hand-edited or hostile one) removes nothing.
_JOB_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.(?:yaml|yml|json)\Z")


def _written_before(out: Path) -> set[str]:
    try:  # non-blocking and regular-only: a FIFO named like the record must not hang the export
        fd = os.open(out / RECORD, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return set()
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return set()
        text = f.read(64 << 10).decode("utf-8", errors="replace")
    return {n for n in text.splitlines()[:1000] if _JOB_FILE.match(n)}


def _remove_stale(out: Path, names: set[str]) -> None:
    for name in sorted(names):
        path = out / name
        try:
            if stat.S_ISREG(path.lstat().st_mode) or path.is_symlink():  # a file or a link, never a folder
                path.unlink()
        except OSError:  # gone already, or not ours to remove: the new export stands without it
            continue


def write(files: dict[str, Any], out_dir: str | Path, *, force: bool = False) -> list[Path]:
    """Write the job files into ``out_dir``: a new or empty folder, or with ``force`` one an export
    wrote before, whose files are replaced one by one (each atomically) and whose stale ones
    (a cronjob.yaml from a run with --schedule, say) are removed; other files are left alone."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"export output {out} is a file, not a folder", hint="give a folder for -o")
    present = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if present and not force:
        raise InputError(f"export output {out} is not empty ({len(present)} entries); stale job files there "
                         "would be applied too", hint="give a new folder, or --force to replace an earlier export's files")
    prepare_parent(out / RECORD)
    stale = _written_before(out) - set(files)
    paths = []
    for name, doc in files.items():
        write_bytes(out / name, render(name, doc))
        paths.append(out / name)
    _remove_stale(out, stale)
    write_bytes(out / RECORD, "".join(f"{name}\n" for name in sorted(files)).encode())
    return paths
