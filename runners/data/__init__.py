"""Feeds (feeds.py: JSONL, Parquet, datasets folders, TGSP data packages) into examples,
and near-duplicate keys and splits (neardup.py)."""
