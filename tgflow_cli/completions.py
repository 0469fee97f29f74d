"""What `tgflow peft generate` prints: the completions, and with --he what the encrypted
run cost and whether it matched (an experiment, never worded as a privacy guarantee)."""

from __future__ import annotations

from typing import Any

from .common import emit_json
from .term import say, warn


def show(out: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        emit_json(out)
    else:
        _text(out)
    if "he" in out:
        warn("HE-LoRA is EXPERIMENTAL. It hides the activations from an honest-but-curious adapter plane; it does "
             "not hide the adapter from the key holder (one answer reveals ΔW), nor check the returned delta. "
             "See docs/he-lora.md.")


def _text(out: dict[str, Any]) -> None:
    say(f"prompt:       {out['prompt']}")
    if out["sampling"]["mode"] == "sample":
        say(f"sampling:     seed {out['sampling']['seed']} (pass --seed {out['sampling']['seed']} to get these again)")
    labels = (("base", "base model"), ("adapter", f"adapter v{out['version']}"), ("he", f"adapter v{out['version']} HE"))
    for who, label in labels:
        for n, sample in enumerate(out["samples"].get(who, []), 1):
            tag = label if len(out["samples"][who]) == 1 else f"{label} #{n}"
            say(f"{tag + ':':<13} {sample.strip()}")
    if "he" in out:
        _he(out["he"])


def _he(he: dict[str, Any]) -> None:
    sec = he["seconds"]
    say(f"HE-LoRA:      {'same text as plaintext' if he['equal_to_plaintext'] else 'DIFFERS from plaintext'}; "
        f"max delta error {he['max_delta_error']:.2g}; {he['seconds_total']:.1f} s (encrypt {sec['encrypt']:.1f}, "
        f"adapter plane {sec['adapter_plane']:.1f}, decrypt {sec['decrypt']:.1f}); "
        f"{(he['bytes_to_plane'] + he['bytes_to_key_holder']) / 1e6:.0f} MB of ciphertexts")
