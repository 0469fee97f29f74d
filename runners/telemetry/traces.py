"""A round as one OpenTelemetry trace, one span per stage, sent over OTLP/HTTP
(``tgflow[otel]``). A CronJob's parent context (``TRACEPARENT``) is honoured.

The spans are made after the round, from the stages it timed, and sent in one request
with a deadline, so a slow or absent collector costs the round at most that deadline.
"""

from __future__ import annotations

import logging

from tgsp.errors import TgflowError

from .record import Public


def attributes(p: Public) -> dict[str, str | int | float]:
    out: dict[str, str | int | float] = {f"tgflow.{k}": v for k, v in p.labels.items()}
    out.update({f"tgflow.{k}": v for k, v in p.info.items()})
    out.update({"tgflow.outcome": p.outcome, "tgflow.exit_code": p.exit_code})
    out.update({f"tgflow.privacy.{k}": v for k, v in p.privacy.items()})
    if p.withheld:
        out["tgflow.withheld"] = ", ".join(p.withheld)
    return out


def spans(p: Public, traceparent: str | None, service_version: str) -> list:
    """The round's finished spans: a root for the command, a child per stage (nested as they ran)."""
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "tgflow", "service.version": service_version}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tgflow")
    parent = TraceContextTextMapPropagator().extract({"traceparent": traceparent}) if traceparent else None
    root = tracer.start_span(f"tgflow {p.labels['command'].replace('-', ' ')}", context=parent,
                             start_time=int(p.started * 1e9), attributes=attributes(p))
    open_at, end = {-1: root}, int(p.ended * 1e9)
    for s in sorted(p.stages, key=lambda s: (s.start_ns, s.depth)):
        # Under DP a stage's span shows that it ran and how it ended, not how long it took.
        span = tracer.start_span(s.name, context=trace.set_span_in_context(open_at.get(s.depth - 1, root)),
                                 start_time=s.start_ns if p.timed else end,
                                 attributes={"tgflow.stage": s.name, "tgflow.route": p.labels["route"]})
        if not s.ok:
            span.set_status(Status(StatusCode.ERROR, "the round ended in this stage"))
        span.end(end_time=s.end_ns if p.timed else end)
        open_at[s.depth] = span
    if p.exit_code != 0:
        root.set_status(Status(StatusCode.ERROR, p.outcome))
    root.end(end_time=int(p.ended * 1e9))
    provider.shutdown()
    return list(memory.get_finished_spans())


def send(endpoint: str, p: Public, *, traceparent: str | None, service_version: str, timeout: float = 5.0) -> int:
    """Export the trace to ``endpoint`` (the full traces URL); returns how many spans were sent."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    batch = spans(p, traceparent, service_version)
    quiet = logging.getLogger("opentelemetry")
    level, quiet.level = quiet.level, logging.CRITICAL  # one warning line from us, not the exporter's traceback
    exporter = OTLPSpanExporter(endpoint=endpoint, timeout=timeout)
    try:
        result = exporter.export(batch)
    finally:
        exporter.shutdown()
        quiet.setLevel(level)
    if result is not SpanExportResult.SUCCESS:
        raise TgflowError("the collector did not accept the trace")
    return len(batch)
