"""Federated updates, format and math only: sites end a round at an update; an
aggregator verifies a quorum of them, merges them exactly for LoRA, and releases the
result (docs/federated.md). The rounds themselves are runners/stages/site.py (the site's
ending stage) and runners/recipes/aggregate.py (the aggregator's round).

    compress.py   block-wise int8 quantization and top-k with error feedback (pure numpy)
    merge.py      exact (sum of B·A, re-factorized) and FFA merging, module by module (pure torch)
    start.py      the adapter every site starts from, and its digest
    updates.py    the update package: what a site writes (its Body) and what the aggregator checks
"""
