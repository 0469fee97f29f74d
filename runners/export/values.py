"""What export writes into job files is checked as what each value is, before it is written.

A value from a flag, a --set setting, config.toml or the run spec ends up inside YAML,
JSON and command lines that platforms run. Each is checked against its own grammar (an
image reference, a Kubernetes name, a key name, a bucket, an ARN); every other setting
is at least a plain token: no whitespace, quotes, shell or YAML syntax, no '..' segment.
"""

from __future__ import annotations

import re
from typing import Callable

from tgsp.errors import InputError
from tgsp.keyring_trust import check_name

from . import secrets

# The OCI distribution reference grammar: [domain[:port]/]path[:tag][@algorithm:digest].
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
IMAGE = re.compile(rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?"
                   r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?\Z")
DNS_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?\Z")
DNS_SUBDOMAIN = re.compile(r"(?=.{1,253}\Z)[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*\Z")
TOKEN = re.compile(r"[A-Za-z0-9/][A-Za-z0-9._:@=+,/-]{0,1023}\Z")  # ids, types, paths, URIs: no spaces or syntax
SECRET_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}\Z")  # a Databricks secret scope or key
ARN = re.compile(r"arn:[a-z0-9-]+:[a-z0-9-]+:[a-z0-9-]*:[0-9]*:[A-Za-z0-9/+=,.@:_-]{1,1024}\Z")


def _matches(pattern: re.Pattern, what: str) -> Callable[[str, str], None]:
    def check(where: str, value: str) -> None:
        if not isinstance(value, str) or not pattern.match(value):
            raise InputError(f"{where} {value!r} is not {what}", hint="see docs/export.md for what each setting takes")
    return check


image = _matches(IMAGE, "an image reference (registry/repository[:tag][@sha256:digest])")
k8s_name = _matches(DNS_SUBDOMAIN, "a Kubernetes name (DNS-1123: lowercase letters, digits, '-' and '.')")
token = _matches(TOKEN, "a plain value (letters, digits and . _ : @ = + , / -, no spaces or quotes)")

KINDS: dict[str, Callable[[str, str], None]] = {
    "kubectl_image": image,
    "namespace": _matches(DNS_LABEL, "a Kubernetes namespace (a DNS-1123 label)"),
    "runtime": k8s_name, "keyring_secret": k8s_name, "passphrase_secret": token, "state_claim": k8s_name,
    "work_claim": k8s_name, "pushgateway_secret": k8s_name,
    "secret_scope": _matches(SECRET_NAME, "a Databricks secret scope name"),
    "secret_key": _matches(SECRET_NAME, "a Databricks secret key name"),
    "role_arn": _matches(ARN, "an ARN"), "scheduler_role_arn": _matches(ARN, "an ARN"),
    "passphrase_secret_arn": _matches(ARN, "an ARN"),
}


def _count(where: str, value: str) -> None:
    if not (isinstance(value, str) and value.isdigit() and 0 < int(value) <= 1 << 20):
        raise InputError(f"{where} {value!r} is not a whole number of GB", hint="e.g. 100")


KINDS.update({"volume_gb": _count, "disk_gb": _count})


def _no_climb(where: str, value: str) -> None:
    if ".." in value.split("/"):
        raise InputError(f"{where} {value!r} has a '..' segment", hint="give the path itself")


def check_options(spec, options) -> None:
    """The image, every --set setting, and the key names the exported command carries."""
    secrets.check(list(options.settings.values()), "--set")  # a planted credential is named as one
    image("--image (or $TGFLOW_IMAGE, or [export] image)", options.image)
    for key, value in sorted(options.settings.items()):
        where = f"--set {key}"
        if key != "engine":  # a choice, which its backend checks against its list
            KINDS.get(key, token)(where, value)
            _no_climb(where, value)
    if options.aggregate is not None and options.aggregate.decrypt_from is not None:
        _key("--decrypt-from", options.aggregate.decrypt_from)
    fed = spec.federation
    if fed is not None:
        _key("run spec federation.aggregator", fed.aggregator)
        for site in fed.sites:
            _key("run spec federation.sites", site)


def _key(where: str, ref: str) -> None:
    """A key reference the job's command line carries: a key name, or a public key file's path."""
    if "/" in ref or ref.endswith(".json"):
        token(where, ref)
        _no_climb(where, ref)
        return
    try:
        check_name(ref)
    except InputError:
        raise InputError(f"{where} {ref!r} is not a key name", hint="1-64 of A-Z a-z 0-9 . _ -") from None
