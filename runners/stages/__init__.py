"""One round as stages: inputs -> selection -> plan -> update -> evaluation -> release.

Each stage is a function from the round (``runners.stages.context.Round``) and the
typed results of the stages before it to its own result. Privacy modes
(``runners/privacy/modes.py``) plug in at plan and update. A federated site ends at
its update (site.py) instead of a release; the aggregator's and key holder's rounds
share aggregation.py. ``peft budget`` and ``peft validate`` reuse the early stages.
"""
