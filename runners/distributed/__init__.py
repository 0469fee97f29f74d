"""A round on several processes and nodes: torch's process group (world.py), what rank 0
sends the other ranks (messages.py, never pickle), how the ranks run a round (ranks.py),
and the launchers: torch's elastic launcher (launch.py), a platform's cluster description
(clusters.py) and Spark's TorchDistributor (spark.py)."""
