"""The run spec: the one contract between `peft run` and every export backend.

Validated with pydantic. Errors name the field (``training.batch_size``)
and the problem. Unknown fields are rejected, so typos never pass silently.
Keys named ``$comment`` are allowed anywhere and ignored, so example specs
can carry their own documentation. Relative paths resolve against the
spec file's folder.
"""

from __future__ import annotations

import difflib
import hashlib
import os
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tgsp.canonical import encode, parse
from tgsp.errors import FormatError, InputError
from tgsp.inputfile import read_input

SPEC_VERSION = "tgflow.run-spec/1"


class _Strict(BaseModel):
    # strict: "steps": "100" or "packing": 1 is an error, not a silent conversion.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class FeedSpec(_Strict):
    type: Literal["jsonl", "parquet", "dataset", "tgsp", "hf"] = Field(
        description="jsonl: local JSON Lines; parquet: local Parquet; dataset: a `datasets` save_to_disk folder; "
                    "tgsp: a signed TGSP data package (verified before use); hf: a dataset id already in the local cache")
    uri: str = Field(min_length=1, description="Path (or dataset id for type=hf)")
    split: str = Field("train", description="Split to read for type=dataset or hf")
    text_field: Optional[str] = Field(None, description="Column holding plain text; default: text, prompt/completion or messages")
    max_examples: Optional[int] = Field(None, ge=1, description="Read at most this many examples")
    route: Optional[str] = Field(None, description="type=tgsp: accept only a data package of this route")
    min_version: Optional[int] = Field(None, ge=0, description="type=tgsp: accept only a data package of at least this version")


class GateSpec(_Strict):
    max_eval_loss: Optional[float] = Field(None, gt=0, description="Reject if held-out eval loss after training is above this")
    min_eval_improvement: Optional[float] = Field(
        None, ge=-1, le=1, description="Reject unless eval loss drops by at least this fraction of the base model's")
    min_exact_match: Optional[float] = Field(None, ge=0, le=1, description="Reject unless greedy generation reproduces at least this fraction of eval completions exactly")
    min_choice_accuracy: Optional[float] = Field(None, ge=0, le=1, description="Reject unless the true completion ranks first among the eval set's distinct completions this often")
    max_regression: Optional[float] = Field(0.0, ge=0, le=1, description="Champion/challenger: reject if exact match or choice accuracy on the eval set falls by more than this against the route's production adapter (null: off)")


class PolicySpec(_Strict):
    novelty_threshold: float = Field(0.5, ge=0, le=1, description="An example is novel if 1 - exp(-L) >= this, L its completion's mean token loss under the route's current adapter (docs/peft-run.md#novelty)")
    min_novel_examples: int = Field(8, ge=1, description="Skip the round when fewer novel examples remain")
    forgetting_budget: float = Field(0.10, ge=0, description="Max relative increase of reference-set (and earlier rounds' held-out) loss against the previous release ((after - before) / before)")
    replay_fraction: float = Field(0.0, ge=0, le=4, description="Add this many times the round's training examples, sampled from earlier releases' training data (not with privacy.mode dp)")
    eval_fraction: float = Field(0.1, ge=0, lt=1, description="Fraction of novel examples held out for evaluation when no eval feed is given")
    gate: GateSpec = GateSpec()


class DPSpec(_Strict):
    """DP-SGD settings; see docs/privacy.md."""

    max_grad_norm: float = Field(0.1, gt=0, description="C: each example's gradient (all LoRA factors together) is clipped to this L2 norm. Set it below most per-example gradient norms (tgflow privacy plan measures them), so every example is clipped and the noise, proportional to C, stays small against the signal; 0.1 suits LoRA on the shipped model (measured: docs/privacy.md)")
    noise_multiplier: Optional[float] = Field(None, gt=0, description="σ: Gaussian noise std is σ·C per logical batch (give this or target_epsilon)")
    target_epsilon: Optional[float] = Field(None, gt=0, le=100, description="Calibrate σ so this round's ε lands on this (give this or noise_multiplier)")
    target_delta: float = Field(gt=0, lt=1, description="δ; must be below 1/N (N = training examples); 1e-5 or less is usual")
    accountant: Literal["prv", "rdp"] = Field("prv", description="prv: privacy random variables (tight upper bound); rdp: Rényi DP (looser)")
    route_budget_epsilon: Optional[float] = Field(None, gt=0, description="Total ε the route may spend across all rounds (the ledger enforces it)")

    @model_validator(mode="after")
    def _one_noise_source(self) -> DPSpec:
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ValueError("give exactly one of noise_multiplier or target_epsilon")
        if self.target_epsilon and self.route_budget_epsilon and self.target_epsilon > self.route_budget_epsilon:
            raise ValueError(f"target_epsilon {self.target_epsilon:g} exceeds route_budget_epsilon "
                             f"{self.route_budget_epsilon:g}: no round could finish")
        return self


class N2HESpec(_Strict):
    """privacy.mode "n2he": a federated site's update is CKKS-encrypted (docs/n2he.md)."""

    context: str = Field(min_length=1, description="The HE key (name or public file from `key export-public`) the sites encrypt under; the key holder's own HE key of that name decrypts")
    custody: Literal["key-holder", "shared-key"] = Field("key-holder", description="key-holder: only a separate key holder has the secret key and decrypts only sums it re-summed from a quorum of signed updates; shared-key (NVFlare's model, weaker): every site has the secret key and the aggregator none")
    key_holder: Optional[str] = Field(None, description="key-holder custody: the key holder's recipient key; sites encrypt their update to it as well as to the aggregator, so it can re-sum them")
    max_update_norm: float = Field(10.0, gt=0, le=1e6, description="C: a site clips its update (all of ΔB together) to this L2 norm before weighting and encryption, since a norm cannot be checked under encryption; set it a little above your sites' usual norm (peft run prints it when it clips)")
    weights: Literal["examples", "equal"] = Field("examples", description="The weight a site multiplies its update by before encrypting: its (public) example count, or 1")
    max_key_age_days: int = Field(90, ge=1, le=3650, description="Refuse to encrypt under an HE context older than this: rotate HE keys on this schedule (docs/n2he.md#decryption-leaks)")

    @model_validator(mode="after")
    def _holder(self) -> N2HESpec:
        if self.custody == "key-holder" and not self.key_holder:
            raise ValueError("custody \"key-holder\" needs key_holder: the key holder's recipient key")
        if self.custody == "shared-key" and self.key_holder:
            raise ValueError("custody \"shared-key\" has no key holder: drop key_holder")
        return self


class CompressionSpec(_Strict):
    """How a site compresses its update (docs/federated.md#compression)."""

    quantize: Literal["int8-block", "none"] = Field("int8-block", description="int8-block: 8-bit values with one float32 scale per block; none: float32")
    block: int = Field(256, ge=16, le=65536, description="Values per quantization block")
    topk: Optional[float] = Field(None, gt=0, lt=1, description="Send only this fraction of the largest values; the rest carries to the site's next update (error feedback)")
    max_loss_increase: float = Field(0.02, ge=0, le=10, description="top-k gate: if the site's held-out loss with the sparse update rises more than this fraction over the dense one, the dense update is sent")


class FederationSpec(_Strict):
    """A federated round: sites end at an update, the aggregator combines them (docs/federated.md)."""

    round: str = Field(pattern=r"^([A-Za-z0-9]|\{date\})([A-Za-z0-9._:-]|\{date\}){0,63}$", description="The round's id, the same at every site and at the aggregator; {date} is replaced by the UTC date (YYYY-MM-DD) when the round runs, for scheduled rounds")
    aggregator: str = Field(min_length=1, description="The aggregator's recipient key (name or public key file): sites encrypt their update to it")
    start: Optional[str] = Field(None, pattern=r"^sha256:[0-9a-f]{64}$", description="Package id of the adapter every site starts from; default: the registry's production adapter (the base model when there is none)")
    method: Literal["exact", "ffa"] = Field("exact", description="exact: sum of B·A, re-factorized by SVD; ffa: A frozen at the start, only B trained and averaged")
    sites: list[str] = Field([], description="Aggregator: the site signing keys whose updates it accepts (names or public key files)")
    public_examples: Optional[int] = Field(None, ge=1, description="Under dp: the public example count this site declares as its weight (the true count is private)")
    compression: CompressionSpec = CompressionSpec()


class PrivacySpec(_Strict):
    mode: Literal["off", "dp", "n2he"] = "off"
    dp: Optional[DPSpec] = None
    n2he: Optional[N2HESpec] = None

    @model_validator(mode="after")
    def _mode_settings(self) -> PrivacySpec:
        if self.mode == "dp" and self.dp is None:
            raise ValueError("mode 'dp' needs a dp section")
        if self.mode == "n2he" and self.n2he is None:
            raise ValueError("mode 'n2he' needs an n2he section (at least its context)")
        return self

    @property
    def trains_with_dp(self) -> bool:
        """dp, or n2he with a dp section: DP-SGD at the site, then encryption."""
        return self.mode == "dp" or (self.mode == "n2he" and self.dp is not None)


class LoraSpec(_Strict):
    r: int = Field(8, ge=1, le=1024, description="LoRA rank")
    alpha: float = Field(16, gt=0, description="LoRA alpha (scaling = alpha / r)")
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: Union[list[str], Literal["all-linear"]] = Field(["q_proj", "v_proj"])

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("name at least one module, or use \"all-linear\"")
        return v


# Training objectives: built-in names and their parameters' ranges [low, high) (runners/learn/losses.py
# implements them); any other name must be a plug-in in this entry-point group.
LOSSES: dict[str, dict[str, tuple[float, float]]] = {
    "token_ce": {}, "label_smoothing": {"smoothing": (0.0, 1.0)}, "focal": {"gamma": (0.0, 10.0)}}
LOSS_PLUGINS = "tgflow.losses"


def loss_plugins() -> list[str]:
    """The names of installed loss plug-ins (read from package metadata; nothing is imported)."""
    from importlib.metadata import entry_points

    return sorted({ep.name for ep in entry_points(group=LOSS_PLUGINS)})


class LossSpec(BaseModel):
    """``{"name": ..., **parameters}``: a built-in objective or a ``tgflow.losses`` plug-in."""
    model_config = ConfigDict(extra="allow", frozen=True, strict=True)
    name: str = Field("token_ce", pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$",
                      description="token_ce, label_smoothing (smoothing), focal (gamma), or a tgflow.losses plug-in")

    @model_validator(mode="after")
    def _known(self) -> LossSpec:
        params = dict(self.model_extra or {})
        if any(isinstance(v, bool) or not isinstance(v, (int, float, str)) for v in params.values()):
            raise ValueError("loss parameters must be numbers or strings")
        if self.name in LOSSES:
            ranges = LOSSES[self.name]
            for key, value in params.items():
                if key not in ranges:
                    raise ValueError(f"loss {self.name} takes {', '.join(ranges) or 'no parameters'}, not {key!r}")
                low, high = ranges[key]
                if isinstance(value, str) or not low <= value < high:
                    raise ValueError(f"loss {self.name}: {key} must be a number from {low:g} up to {high:g}")
            return self
        known = sorted(LOSSES) + loss_plugins()
        if self.name not in known:
            near = difflib.get_close_matches(self.name, known, n=1)
            raise ValueError(f"unknown loss {self.name!r}" + (f"; did you mean {near[0]!r}?" if near else "")
                             + f" (built-in: {', '.join(sorted(LOSSES))}; plug-ins: the {LOSS_PLUGINS} entry points)")
        return self

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class TrainingSpec(_Strict):
    steps: Optional[int] = Field(None, ge=1, description="Optimizer steps (give steps or epochs)")
    epochs: Optional[float] = Field(None, gt=0, description="Passes over the novel training data (give steps or epochs)")
    batch_size: int = Field(8, ge=1, le=4096)
    gradient_accumulation: int = Field(1, ge=1, le=1024)
    learning_rate: float = Field(2e-4, gt=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0)
    max_seq_len: int = Field(256, ge=8, le=131072)
    seed: int = Field(0, ge=0, lt=2**32)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    init: Literal["last-release", "base"] = Field("last-release", description="Start from the route's production adapter (last-release), or from a fresh LoRA on the base model")
    checkpoint_every: int = Field(25, ge=1, description="Write a resumable checkpoint every N steps")
    packing: bool = Field(False, description="Pack each micro-batch's examples into rows of max_seq_len "
                                             "(block-diagonal attention, no cross-example loss): fewer pad tokens")
    loss: LossSpec = Field(default_factory=LossSpec, description="The training objective, e.g. "
                           '{"name": "focal", "gamma": 2.0}; default token_ce (mean token cross-entropy)')

    @model_validator(mode="after")
    def _steps_or_epochs(self) -> TrainingSpec:
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of steps or epochs")
        return self


class OutputSpec(_Strict):
    path: str = Field(min_length=1, description="Package to write (.tgsp); the route state lives beside it")
    signing_key: str = Field(min_length=1, description="Signing key name in the keyring")
    recipients: list[str] = Field(min_length=1, description="Recipient key names or public key files")
    version: Union[int, Literal["auto"]] = Field("auto", description="Route version; auto = last successful + 1")
    expires_in_days: Optional[int] = Field(None, ge=1)
    state_dir: Optional[str] = Field(None, description="Route state folder (default: <output dir>/.tgflow-state/<route_key>)")
    registry: Optional[str] = Field(None, description="Registry folder the package is registered in as candidate (default: <output dir>/registry)")


class RunSpec(_Strict):
    """One continuous-learning round for one route."""

    spec_version: Literal["tgflow.run-spec/1"] = SPEC_VERSION
    route_key: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$", description="Route this round belongs to")
    base_model_ref: str = Field(min_length=1, description="Local Hugging Face model folder, or an id already in the offline cache")
    feed: Optional[FeedSpec] = Field(None, description="The round's training data (peft run needs it; a federated aggregator has none)")
    reference: FeedSpec = Field(description="Fixed reference set (old domain) for the forgetting budget")
    eval: Optional[FeedSpec] = Field(None, description="Held-out evaluation feed; default: a slice of the novel data")
    policy: PolicySpec = PolicySpec()
    privacy: PrivacySpec = PrivacySpec()
    lora: LoraSpec = LoraSpec()
    training: TrainingSpec
    output: OutputSpec
    federation: Optional[FederationSpec] = Field(None, description="Make this a federated round: a site ends at an update for the aggregator")


def _strip_comments(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip_comments(v) for k, v in obj.items() if k != "$comment"}
    if isinstance(obj, list):
        return [_strip_comments(v) for v in obj]
    return obj


# Spellings from the customer's documents, and what tgflow calls them.
_RENAMED = {"hf_dataset": "hf", "huggingface": "hf", "json": "jsonl", "parquet_file": "parquet"}


def _one(err: dict[str, Any]) -> str:
    loc = [str(p) for p in err["loc"]]
    where = ".".join(loc) or "spec"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        near = difflib.get_close_matches(loc[-1], _fields_at(loc[:-1]), n=1)
        msg = "unknown field" + (f"; did you mean {near[0]!r}?" if near else " (see docs/run-spec.schema.json)")
    elif err["type"] == "literal_error" and loc and loc[-1] == "type" and err.get("input") in _RENAMED:
        msg = f"{err['input']!r} is called {_RENAMED[err['input']]!r} in tgflow; {msg}"
    return f"{where}: {msg}"


def _fields_at(loc: list[str]) -> list[str]:
    model: Any = RunSpec
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        ann = getattr(field, "annotation", None)
        model = next((a for a in (ann, *getattr(ann, "__args__", ())) if hasattr(a, "model_fields")), None)
        if model is None:
            return []
    return list(model.model_fields)


def _format_error(exc: ValidationError) -> str:
    """Every problem at once, unknown fields first (a typo'd ``trainig`` also
    makes ``training`` missing; the typo is the news)."""
    errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    items = [_one(e) for e in errors]
    if len(items) == 1:
        return f"run spec field {items[0]}"
    return f"run spec has {len(items)} problems: " + "; ".join(items)


def parse_spec(obj: Any) -> RunSpec:
    try:
        return RunSpec.model_validate(_strip_comments(obj))
    except ValidationError as exc:
        raise InputError(_format_error(exc), hint="see docs/peft-run.md for every field") from None


def load_spec(path: str | Path) -> tuple[RunSpec, Path, str]:
    """Read, validate and digest a spec file. Returns (spec, its folder, digest)."""
    p = Path(path)
    raw = read_input(p, "run spec")
    try:
        obj = parse(raw, what=f"run spec {p}")
    except FormatError as exc:
        raise InputError(str(exc)) from None
    spec = parse_spec(obj)
    return spec, p.resolve().parent, spec_digest(spec)


def spec_digest(spec: RunSpec) -> str:
    """SHA-256 of the canonical JSON of the validated spec (comments excluded)."""
    return hashlib.sha256(encode(spec.model_dump(mode="json"))).hexdigest()


def json_schema() -> dict[str, Any]:
    schema = RunSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://tgflow.dev/schemas/run-spec-1.json"
    return schema


def resolve(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return Path(os.path.normpath(p if p.is_absolute() else base / p))
