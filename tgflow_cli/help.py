"""Help text that reads like a CLI, not like Python: metavars such as FILE,
NAME or N instead of ``<list[str]>`` or ``<int range>``, and -h for help."""

from __future__ import annotations

from typing import Any

HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}

# By parameter name, what a value is; anything else shows its own name in capitals.
_METAVARS = {
    "output": "PATH", "spec": "FILE", "evidence": "FILE", "state": "FILE", "revocations": "FILE",
    "passphrase_file": "FILE", "fork": "FILE", "file": "FILE", "package": "PKG", "packages": "PKG",
    "package_opt": "PKG", "src_dir": "SRC_DIR", "recipient": "NAME|FILE", "trusted": "NAME|FILE",
    "identity": "NAME", "sign": "KEY", "key": "KEY", "name": "NAME", "ref": "NAME|KEYID",
    "expires": "TIME", "at": "TIME", "version": "N", "min_version": "N", "chunk_size": "BYTES",
    "gpus": "N", "timeout_minutes": "N", "set_": "KEY=VALUE", "schedule": "CRON", "home": "DIR",
    "input_root": "DIR", "output_root": "DIR", "pkcs11": "URI", "uri": "URI", "reason": "TEXT",
    "shell": "SHELL", "model_id": "ID",
}


def polish(command: Any) -> Any:
    """Give every parameter of ``command`` and its subcommands a plain metavar."""
    for param in command.params:
        if getattr(param, "is_flag", False) or getattr(param, "count", False):
            continue
        if param.metavar is None:
            param.metavar = _METAVARS.get(param.name, param.name.upper())
        if getattr(param, "param_type_name", "") == "argument":
            metavar = param.metavar
            param.display_type_rich = lambda ctx: None  # the metavar says it; no "<path>" beside it
            param.get_usage_pieces = lambda ctx, m=metavar: [m]
    for sub in getattr(command, "commands", {}).values():
        polish(sub)
    return command
