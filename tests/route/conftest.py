"""Route tests reuse the peft run fixtures: a tiny Llama from a config, a keyring, feeds, a spec writer."""

from tests.runners.conftest import tiny_model, workspace  # noqa: F401
