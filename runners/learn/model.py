"""Base model resolution and loading: local folders or the offline cache only."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from tgsp.errors import InputError, NotFoundError

from ..spec import resolve
from .fetch import check_fetched

_WEIGHT_SUFFIXES = (".safetensors", ".json", ".model", ".txt", ".tiktoken")


@dataclass(frozen=True)
class Device:
    name: str  # "cuda" or "cpu"
    dtype_name: str  # "bfloat16", "float16" or "float32"

    @property
    def dtype(self):
        import torch

        return getattr(torch, self.dtype_name)


def offline() -> None:
    """Make every Hugging Face library refuse network access in this process."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[var] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    quiet()


def quiet() -> None:
    """No library progress bars or advisory warnings on our stderr: tgflow
    reports its own progress (on a TTY only), and --json output stays clean."""
    import warnings

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    for module in ("transformers", "peft", "torch", "opacus", "datasets", "huggingface_hub"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - the train extra is not installed
        pass


def resolve_model(ref: str, base: Path) -> Path:
    """A local folder, or an id already present in the Hugging Face cache."""
    offline()
    local = resolve(base, ref)
    if local.is_dir():
        if not (local / "config.json").exists():
            raise InputError(f"base model folder {local} has no config.json")
        return local
    if ref.startswith((".", "/", "~")) or os.sep in ref and ref.count("/") != 1:
        raise NotFoundError(f"base model folder {local} does not exist", hint="check base_model_ref in the run spec")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(ref, local_files_only=True))
    except Exception:
        raise NotFoundError(f"base model {ref!r} is neither a local folder nor in the offline Hugging Face cache; "
                            "tgflow never downloads",
                            hint=f"on a connected machine: tgflow model fetch {ref} -o models/NAME; copy the folder "
                                 "here and set base_model_ref to it") from None


def model_digest(folder: Path) -> dict[str, str]:
    """SHA-256 of every weight, config and tokenizer file, for the evidence chain."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix in _WEIGHT_SUFFIXES:
            h = hashlib.sha256()
            with open(p, "rb") as f:
                while chunk := f.read(4 << 20):
                    h.update(chunk)
            out[str(p.relative_to(folder))] = h.hexdigest()
    if not any(k.endswith(".safetensors") for k in out):
        raise InputError(f"base model {folder} has no .safetensors weights (pickled .bin weights are refused)")
    check_fetched(folder, out)  # a folder from `tgflow model fetch`: its recorded digests must hold
    return out


def pick_device(precision: str) -> Device:
    import torch

    if torch.cuda.is_available():
        if precision in ("auto", "bf16"):
            dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        else:
            dtype = {"fp32": "float32", "fp16": "float16"}[precision]
        return Device("cuda", dtype)
    if precision in ("bf16", "fp16"):
        raise InputError(f"training.precision {precision} needs a GPU; this machine has none",
                         hint="use precision auto or fp32")
    return Device("cpu", "float32")


def load_tokenizer(folder: Path):
    """The tokenizer alone (no weights), with a pad token."""
    offline()
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot load the tokenizer from {folder}: {str(exc).splitlines()[0][:200]}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load(folder: Path, device: Device, *, tok=None):
    """Load tokenizer (unless given) and model from ``folder`` with no network and no pickle."""
    tok = tok if tok is not None else load_tokenizer(folder)
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, use_safetensors=True,
                                                     dtype=device.dtype)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot load the base model from {folder}: {str(exc).splitlines()[0][:200]}") from None
    model.to(device.name)
    model.config.use_cache = False
    return tok, model
