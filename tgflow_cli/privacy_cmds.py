"""tgflow privacy ...: plan a DP round before any epsilon is spent."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import emit_json, keyring, passphrase
from .term import say, styled

app = typer.Typer(no_args_is_help=True, help="Plan differentially private rounds (docs/privacy.md).")


@app.command()
def plan(
    spec: Path = typer.Option(..., "--spec", help="The run spec (JSON) of a privacy.mode \"dp\" round."),
    json_out: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
    passphrase_file: Optional[Path] = typer.Option(None, "--passphrase-file", help="Passphrase for a recipient key that opens the route's production adapter, if it has one (else TGFLOW_PASSPHRASE, TGFLOW_PASSPHRASE_FILE, or a prompt).", dir_okay=False),
    input_root: Optional[Path] = typer.Option(None, "--input-root", help="As for peft run.", file_okay=False),
    output_root: Optional[Path] = typer.Option(None, "--output-root", help="As for peft run.", file_okay=False),
) -> None:
    """Say, before training, whether a DP round is likely to learn: sigma, the
    sample rate, the steps, epsilon per round and the route's remaining budget
    (the same accountant as the round), the noise per coordinate against the
    gradient scale measured on the public eval feed, a verdict (likely,
    marginal, unlikely) and the one change that would help most. Charges no
    epsilon, takes no lock, writes nothing.

    Exit codes: 0 planned (whatever the verdict), 2 bad spec.

    Example: tgflow privacy plan --spec examples/run_spec_dp.json
    """
    from runners.recipes.dp_plan import plan_round

    result = plan_round(spec, keyring(), passphrase(passphrase_file), input_root=input_root, output_root=output_root)
    if json_out:
        return emit_json(result)
    _render(result)


def _render(p: dict) -> None:
    budget = p["route_budget_epsilon"]
    say(f"route {p['route']}: {p['examples']:,} examples after selection; start: {p['start']}")
    say(f"mechanism: sample rate {p['sample_rate']:.4g} (expected batch {p['expected_batch_size']}), sigma "
        f"{p['noise_multiplier']:.4g} ({p['noise_multiplier_source']}), max_grad_norm {p['max_grad_norm']:g}, "
        f"{p['planned_steps']} steps at learning rate {p['learning_rate']:g}")
    say(f"privacy: epsilon {p['epsilon']:.4g} this round at delta {p['delta']:g} ({p['accountant']}); route "
        f"{p['route_epsilon_before']:.4g} spent" + (f" of {budget:g}, {p['steps_within_budget']} of "
                                                     f"{p['planned_steps']} steps fit" if budget is not None else ""))
    g = p["gradient_scale"]
    say(f"noise {p['noise_per_coordinate']:.3g} per coordinate of the mean update, against a signal of "
        f"{p['signal_per_coordinate']:.3g} (per-example gradient norm median {g['median_norm']:.3g}, max "
        f"{g['max_norm']:.3g}, {g['clipped_fraction']:.0%} clipped; {g['examples']} eval examples)")
    colour = {"likely": "green", "marginal": "yellow", "unlikely": "bold red"}[p["verdict"]]
    likely, marginal = p["thresholds"]["likely"], p["thresholds"]["marginal"]
    say(styled(f"verdict: {p['verdict']} to learn", colour),
        f" (travel {p['travel']:.3g}, {p['travel_without_noise']:.3g} without noise; coherence "
        f"{p['coherence']:.3g}; likely from {likely['travel']:g} and {likely['coherence']:g}, marginal from "
        f"{marginal['travel']:g} and {marginal['coherence']:g})")
    if p["advice"]:
        a = p["advice"]
        say(f"would help most: {a['change']} -> {a['verdict']} (travel {a['travel']:.3g}, coherence "
            f"{a['coherence']:.3g})")
