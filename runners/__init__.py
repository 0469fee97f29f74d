"""The runner: one continuous-learning round, in-process, and the jobs that run it elsewhere.

Floors, from the top (docs/architecture.md; the contracts in pyproject.toml hold them):

    recipes/               the round kinds the CLI runs, each one story (site round, aggregation,
                           decryption, validate, trial, DP plan, federation simulation)
    stages/, export/       the round's machinery (the Round context and its stages, inputs to
                           release); the same spec as native jobs on the platforms users run
    privacy/, distributed/ accounting, the ledger, the DP plan and the privacy modes; several
                           processes and nodes (the process group, rank 0's messages, launchers)
    learn/                 model, batches, training, DP-SGD, metrics, adapters
    state/, n2he/          the route's store, registry, checkpoints and locks (no torch); CKKS:
                           encrypt, sum, decrypt, their file formats and the he-sum package
    data/, fed/            feeds and near-duplicates; federated updates: their format,
                           compression and merging
    spec.py, outcomes.py   the contract every floor reads
"""
