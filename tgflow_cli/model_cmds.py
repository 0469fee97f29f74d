"""tgflow model ...: base models for air-gapped machines."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import emit_json
from .help import HELP_OPTIONS
from .term import say
from .stdio import no_dash

app = typer.Typer(no_args_is_help=True, context_settings=HELP_OPTIONS,
                  help="Base models: fetch one on a connected machine for use offline.")


@app.command()
def fetch(
    model_id: str = typer.Argument(..., help="A Hugging Face model id, e.g. TinyLlama/TinyLlama-1.1B-Chat-v1.0."),
    output: Path = typer.Option(..., "-o", "--output", help="New folder to write the model into."),
    revision: Optional[str] = typer.Option(None, "--revision", help="A branch, tag or commit (default: main)."),
    json_out: bool = typer.Option(False, "--json", help="Print the record (id, revision, file digests) as JSON."),
) -> None:
    """On a connected machine: copy a model's safetensors weights, configs and
    tokenizer into a folder, with the SHA-256 of every file in tgflow-model.json.
    Carry the folder to the air-gapped machine and set base_model_ref to it;
    peft run checks the digests before loading. Pickled weights and remote code
    are left out. With HF_HUB_OFFLINE=1 it copies from the local cache instead.

    Example: tgflow model fetch TinyLlama/TinyLlama-1.1B-Chat-v1.0 -o models/tinyllama
    """
    no_dash(output, "a folder")
    from runners.learn.fetch import fetch as do_fetch

    record = do_fetch(model_id, output, revision)
    if json_out:
        return emit_json({"path": str(output), **record})
    say(f"fetched {model_id} at {record['snapshot'][:12]} into {output}: {len(record['files'])} files; "
        f"set base_model_ref to {output}")
