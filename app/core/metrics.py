"""Prometheus metrics, on a registry of our own (one per app, so tests and processes never share)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 45, 60, 90, 120, 180)
QUEUE_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300)
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Where a call's time goes besides Pixazo: its row (admit, finish), the wait for a download slot and
# the download, the wait for an image-pool thread and the decode (the thumbnail).
STAGES = ("admit", "download_wait", "download", "thumbnail_wait", "thumbnail", "finish")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.generations = Counter("pixazo_generations", "Finished image-making calls, by status and caller.",
                                   ["status", "caller"], registry=self.registry)
        self.upstream_latency = Histogram("pixazo_upstream_latency_seconds",
                                          "Time of each attempt at Pixazo's gateway.", buckets=LATENCY_BUCKETS,
                                          registry=self.registry)
        self.queue_wait = Histogram("pixazo_queue_wait_seconds", "Time calls waited for a slot to call Pixazo.",
                                    buckets=QUEUE_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("pixazo_calls_in_flight", "Calls holding a slot to call Pixazo.",
                               registry=self.registry)
        self.queued = Gauge("pixazo_calls_queued", "Calls waiting for a slot.", registry=self.registry)
        # Same caller label as pixazo_generations: the configured token names (a bounded set).
        self.spend = Counter("pixazo_spend_usd", "US dollars spent at Pixazo by finished calls (their rows' "
                             "cost_usd), by caller.", ["caller"], registry=self.registry)
        self.retries = Counter("pixazo_retries", "Retried attempts at Pixazo.", registry=self.registry)
        self.breaker = Enum("pixazo_breaker_state", "Circuit breaker state.",
                            states=["closed", "half_open", "open"], registry=self.registry)
        self.stages = Histogram("pixazo_stage_seconds", "Time in each stage of a call besides Pixazo: "
                                "admit, download_wait, download, thumbnail_wait, thumbnail, finish.", ["stage"],
                                buckets=STAGE_BUCKETS, registry=self.registry)
        self.breaker_failures = Gauge("pixazo_breaker_consecutive_failures",
                                      "Consecutive gateway failures counted by the breaker.", registry=self.registry)

    def generation(self, status: str, caller: str | None, cost_usd: float | None = None) -> None:
        self.generations.labels(status=status, caller=caller or "anonymous").inc()
        if cost_usd:
            self.spend.labels(caller=caller or "anonymous").inc(cost_usd)

    def stage(self, name: str, seconds: float) -> None:
        self.stages.labels(stage=name).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
