"""One round as stages: inputs -> selection -> plan -> update -> evaluation -> release.

Each stage is a function from the round (``runners.round.Round``) and the
typed results of the stages before it to its own result. Privacy modes
(``runners/modes.py``) plug in at plan and update; ``peft budget`` and
``peft validate`` reuse the early stages.
"""
