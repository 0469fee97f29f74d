"""The optional parts of tgflow: which extra each feature needs, and whether it works here.

One table serves two readers: the error classifier, which turns a missing optional
module into exit 2 with ``pip install 'tgflow[EXTRA]'`` instead of "internal error",
and ``tgflow doctor``, which imports each extra and runs a tiny self-test.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from typing import Callable


def _train() -> str:
    import peft
    import torch
    import transformers

    if float((torch.ones(2) + 1).sum()) != 4.0:
        raise RuntimeError("torch computes 1+1 wrongly")
    return f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}"


def _tenseal() -> str:
    import tenseal as ts

    ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 40, 60])
    ctx.global_scale = 2.0 ** 40
    got = (ts.ckks_vector(ctx, [1.0, 2.0]) + ts.ckks_vector(ctx, [0.5, 0.5])).decrypt()
    if abs(got[0] - 1.5) > 1e-3 or abs(got[1] - 2.5) > 1e-3:
        raise RuntimeError("a CKKS sum decrypted wrongly")
    return f"tenseal {ts.__version__}: a CKKS sum decrypts"


def _pkcs11() -> str:
    from tgsp.pkcs11 import MODULE_ENV

    importlib.import_module("pkcs11")  # importing is the test; a token also needs its module

    module = os.environ.get(MODULE_ENV)
    return f"python-pkcs11 importable; {MODULE_ENV}={'set' if module else 'not set'}"


def _spark() -> str:
    import pyspark

    return f"pyspark {pyspark.__version__}"


def _export_check() -> str:
    for name in _VALIDATORS:
        importlib.import_module(name)
    return "every platform validator imports"


_VALIDATORS = ("kubernetes_validate", "botocore", "regex", "google.cloud.aiplatform", "google.cloud.scheduler",
               "azure.ai.ml", "databricks.bundles", "kubeflow_trainer_api", "kubeflow.training")


def _tracking() -> str:
    from mlflow.entities import Metric

    Metric("probe", 1.0, 0, 0)
    return f"mlflow {importlib.metadata.version('mlflow-skinny')}"


def _otel() -> str:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: F401

    return f"opentelemetry-sdk {importlib.metadata.version('opentelemetry-sdk')}"


@dataclass(frozen=True)
class Extra:
    name: str  # pip install 'tgflow[name]'
    feature: str  # what a user does with it, in their words
    modules: tuple[str, ...]  # modules whose absence means this extra is missing
    self_test: Callable[[], str]


EXTRAS = (
    Extra("train", "training: peft run, peft generate, route eval, federated and n2he site rounds",
          ("torch", "transformers", "peft", "safetensors", "tokenizers", "datasets", "opacus", "msgpack"), _train),
    Extra("n2he", "privacy mode n2he, key generate --type he", ("tenseal",), _tenseal),
    Extra("pkcs11", "signing keys in an HSM (key generate --pkcs11, key import-pkcs11)", ("pkcs11",), _pkcs11),
    Extra("spark", "peft run --cluster spark", ("pyspark",), _spark),
    Extra("export-check", "export --check (the platforms' own validators)", _VALIDATORS, _export_check),
    Extra("tracking", "MLflow run tracking (--mlflow)", ("mlflow", "sqlalchemy", "alembic"), _tracking),
    Extra("otel", "OpenTelemetry traces (--otlp-endpoint)", ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http"),
          _otel),
)


def _covers(module: str, name: str) -> bool:
    # ModuleNotFoundError names the first missing part: "google" for a missing google.cloud.aiplatform
    return name == module or name.startswith(module + ".") or module.startswith(name + ".")


def named(name: str) -> Extra:
    return next(e for e in EXTRAS if e.name == name)


_SHARED = {"regex"}  # needed by more than one extra (transformers too): its absence names no one extra


def for_module(name: str | None) -> Extra | None:
    """The extra that provides the missing module ``name``, or None. Only when the module's top-level
    package cannot be found at all: a missing submodule of an installed package (torch._C,
    transformers.models.x) is a broken or mismatched install, not a missing extra."""
    if not name or name.split(".")[0] in _SHARED or not _absent(name.split(".")[0]):
        return None
    return next((e for e in EXTRAS if any(_covers(m, name) for m in e.modules)), None)


def _absent(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except ImportError:  # a dotted name whose parent is missing
        return True


def present(extra: Extra) -> dict:
    """Whether ``extra``'s modules can be found, without importing them (fast)."""
    missing = [m for m in extra.modules if _absent(m)]
    return {"installed": not missing, "working": None,
            "detail": f"missing: {', '.join(missing)}" if missing else "installed (not tried: run tgflow doctor)",
            "fix": f"pip install 'tgflow[{extra.name}]'" if missing else None}


def check(extra: Extra) -> dict:
    """Whether ``extra`` is installed and passes its self-test; never raises."""
    missing = [m for m in extra.modules if _absent(m)]
    if missing:
        return {"installed": False, "working": False, "detail": f"missing: {', '.join(missing)}",
                "fix": f"pip install 'tgflow[{extra.name}]'"}
    try:
        return {"installed": True, "working": True, "detail": extra.self_test(), "fix": None}
    except Exception as exc:  # the point of a self-test: report any failure, never crash doctor
        return {"installed": True, "working": False, "detail": f"{type(exc).__name__}: {str(exc)[:120]}",
                "fix": f"pip install --force-reinstall 'tgflow[{extra.name}]'"}
