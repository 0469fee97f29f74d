"""tgflow command-line interface: thin Typer commands over the libraries."""
