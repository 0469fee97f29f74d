"""What a round tells the systems operators already watch: a Prometheus textfile and the
Pushgateway (prom.py), MLflow runs (tracking.py) and OpenTelemetry traces (traces.py).

The round only marks its stages (observe.py); after it ends, the CLI builds one
``RoundRecord`` (record.py) and the sinks send its public view (sinks.py). Nothing is
sent unless configured, nothing private leaves (``record.public``), and no sink can
change a round's exit code. No torch here.
"""
