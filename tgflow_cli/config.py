"""$TGFLOW_HOME/config.toml: defaults for flags people repeat.

Order of precedence, for every setting: the command-line flag, then the
environment variable (where there is one), then this file, then tgflow's
built-in default. Unknown keys are refused with a suggestion, so a typo
never silently drops a trust setting. Relative paths are relative to the
keyring folder.

    [tgsp]
    trusted = ["release", "ci.pub.json"]   # verify/unpack --trusted
    revocations = ["revoked/ci-v1.json"]   # verify/unpack --revocations
    state = "/var/lib/tgflow/rollback.json" # verify/unpack --state
    require_hardware = "ed25519"            # verify/unpack --require-hardware
    recipients = ["operator"]               # build --recipient
    sign = ["release"]                      # build --sign

    [keys]
    passphrase_file = "/run/secrets/tgflow-pp"  # after TGFLOW_PASSPHRASE(_FILE)

    [export]
    image = "registry.example/tgflow:0.1.0"     # after TGFLOW_IMAGE

    [route]
    registry = "/srv/tgflow/registry"          # route ... --registry (or "oci://HOST/REPO")
    signing_key = "release"                    # route ... --signing-key

    [metrics]                                  # peft run, fed aggregate, fed decrypt
    file = "/var/lib/node_exporter/tgflow.prom"          # --metrics-file
    pushgateway = "http://pushgateway:9091"              # --pushgateway
    pushgateway_username = "tgflow"                      # after TGFLOW_PUSHGATEWAY_USERNAME
    pushgateway_password_file = "/run/secrets/pushgw"    # after TGFLOW_PUSHGATEWAY_PASSWORD(_FILE)

    [tracking]
    mlflow = "http://mlflow:5000"              # --mlflow
    otlp_endpoint = "http://collector:4318"    # --otlp-endpoint, after OTEL_EXPORTER_OTLP_ENDPOINT
"""

from __future__ import annotations

import difflib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tgsp.errors import InputError
from tgsp.inputfile import read_input

FILE = "config.toml"
_LISTS = {("tgsp", "trusted"), ("tgsp", "revocations"), ("tgsp", "recipients"), ("tgsp", "sign")}
_STRINGS = {("route", "registry"), ("route", "signing_key"), ("tgsp", "state"), ("tgsp", "require_hardware"), ("keys", "passphrase_file"), ("export", "image"),
            ("metrics", "file"), ("metrics", "pushgateway"), ("metrics", "pushgateway_username"),
            ("metrics", "pushgateway_password_file"), ("tracking", "mlflow"), ("tracking", "otlp_endpoint")}
_PATHS = {("route", "registry"), ("tgsp", "revocations"), ("tgsp", "state"), ("keys", "passphrase_file"),
          ("metrics", "file"), ("metrics", "pushgateway_password_file")}
_CHOICES = {("tgsp", "require_hardware"): ("ed25519", "all")}
_INTS = {("route", "index_days"): (1, 3660)}


@dataclass
class Config:
    path: Path | None = None
    values: dict[tuple[str, str], Any] = field(default_factory=dict)

    def get(self, section: str, key: str, default: Any = None) -> Any:
        return self.values.get((section, key), default)


def _toml(data: bytes, path: Path) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"{path} is not valid TOML: {exc}", hint="fix or remove the file") from None
    except RecursionError:
        raise InputError(f"{path} is nested too deeply to be a tgflow config", hint="fix or remove the file") from None


def _present(path: Path) -> bool:
    """Whether a config file is there to read. Anything at the path that is not a regular
    file (a folder, which a Kubernetes subPath mount of a missing file creates, a FIFO, a
    device, a dangling link) is refused: skipping it would drop its trust pins."""
    try:
        mode = os.stat(path).st_mode  # follows links: a ConfigMap's link to its file is fine
    except FileNotFoundError:
        if path.is_symlink():
            raise InputError(f"{path} is a link to nothing", hint="fix the link, or remove it") from None
        return False
    except OSError as exc:
        raise InputError(f"cannot read the config file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise InputError(f"{path} is {kind}; tgflow will not run without the settings it may pin",
                         hint="make it a TOML file, or remove it")
    return True


def load(home: Path) -> Config:
    path = home / FILE
    if not _present(path):
        return Config()
    doc = _toml(read_input(path, "config file", max_bytes=1 << 20), path)
    known = _LISTS | _STRINGS | set(_INTS)
    values: dict[tuple[str, str], Any] = {}
    for section, table in doc.items():
        if not isinstance(table, dict):
            raise InputError(f"{path}: [{section}] must be a table")
        for key, value in table.items():
            _check(path, known, section, key, value)
            if (section, key) == ("route", "registry") and str(value).startswith("oci://"):
                pass  # a registry reference, not a path
            elif (section, key) in _PATHS:
                value = [_rel(home, v) for v in value] if isinstance(value, list) else _rel(home, value)
            elif (section, key) == ("tgsp", "trusted"):  # names stay names; files are relative to the keyring
                value = [_rel(home, v) if "/" in v or v.endswith(".json") else v for v in value]
            values[(section, key)] = value
    return Config(path, values)


def _check(path: Path, known: set, section: str, key: str, value: Any) -> None:
    if (section, key) not in known:
        names = [f"{s}.{k}" for s, k in sorted(known)]
        near = difflib.get_close_matches(f"{section}.{key}", names, n=1)
        raise InputError(f"{path}: unknown setting {section}.{key}" + (f"; did you mean {near[0]}?" if near else ""),
                         hint=f"known: {', '.join(names)}")
    if (section, key) in _LISTS and not (isinstance(value, list) and all(isinstance(v, str) and v for v in value)):
        raise InputError(f"{path}: {section}.{key} must be a list of strings")
    if (section, key) in _STRINGS and not (isinstance(value, str) and value):
        raise InputError(f"{path}: {section}.{key} must be a non-empty string")
    bounds = _INTS.get((section, key))
    if bounds and not (type(value) is int and bounds[0] <= value <= bounds[1]):
        raise InputError(f"{path}: {section}.{key} must be a whole number from {bounds[0]} to {bounds[1]}")
    choices = _CHOICES.get((section, key))
    if choices and value not in choices:
        raise InputError(f"{path}: {section}.{key} is {value!r}; it must be one of {', '.join(choices)}")


def _rel(home: Path, value: str) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else home / p)
