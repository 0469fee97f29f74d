"""Federated rounds: sites end a round at an update; an aggregator verifies a
quorum of them, merges them exactly for LoRA, and releases the result
through the route's evaluation and release stages (docs/federated.md).

    compress.py   block-wise int8 quantization and top-k with error feedback (pure numpy)
    merge.py      exact (sum of B·A, re-factorized) and FFA merging, module by module (pure torch)
    start.py      the adapter every site starts from, and its digest
    updates.py    the update package: what a site writes and what the aggregator checks
    site.py       the site's ending stage: delta, compression, the update package
    aggregate.py  the aggregator's round: screen, merge, evaluate, release
"""
