"""The round kinds the CLI runs, each one story from spec to outcome: a site's or local
round (round.py), the aggregator's (aggregate.py), the n2he key holder's (decrypt.py),
``peft validate`` (validate.py) and ``peft generate`` / ``route eval`` (trial.py).
Nothing below this floor imports a recipe."""
