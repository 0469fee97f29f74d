"""The runner: one continuous-learning round, in-process, and the jobs that run it elsewhere.

Floors, from the top (docs/architecture.md; tests/test_floors.py holds them):

    recipes/   the round kinds the CLI runs, each one story (site round, aggregation, decryption, validate, trial)
    stages/    the round's machinery: the Round context and its stages, inputs to release
    export/    the same spec as native jobs on the platforms users run
    privacy/   accounting, the ledger, the DP plan and the privacy modes
    distributed/  several processes and nodes: the process group, rank 0's messages, the launchers
    learn/     model, batches, training, DP-SGD, metrics, adapters
    n2he/      CKKS: encrypt, sum, decrypt and their file formats
    fed/       federated updates: their format, compression and merging
    state/     the route's store, registry, checkpoints and locks (no torch)
    data/      feeds and near-duplicates
    spec.py, outcomes.py   the contract every floor reads
"""
