"""Privacy: the accountant (accounting.py), the route's ledger (ledger.py), the DP plan
(plan.py), the spec rules that need no torch (rules.py), and the privacy modes a round
runs under (modes.py: off, dp, n2he, and the aggregator's)."""
