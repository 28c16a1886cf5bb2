"""Prometheus metrics: every metric of DESIGN.md, defined once, here.

Takes finished RequestContexts and events from other stages (token
acquisitions, upstream throttling, reloads) and turns them into samples.
Label values are bounded: client and credential names come from the
configuration, `operation_area` from the catalog, methods from a fixed set,
reasons from `gateway.errors.REASONS`; anything else becomes a fixed
placeholder, never a raw path or a value the caller typed.

Some are derived when scraped rather than kept: the seconds-to-expiry gauges
(from the expiry timestamps) and `azdo_gateway_requests_total` (the `_count`
of `azdo_gateway_request_duration_seconds`, which has the same labels).

Multiple worker processes: when `PROMETHEUS_MULTIPROC_DIR` is set (the
supervisor sets it before starting workers), prometheus_client keeps every
value in a per-process file and `render()` merges all of them, so counters of a
worker that died stay counted and never go backwards.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from gateway.errors import REASONS
from gateway.types import RequestContext

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "multiprocess_dir"]

NONE = "-"  # label value when the request never got that far (no client, no operation)
OTHER = "other"  # label value for anything outside the bounded set
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_RESULT = re.compile(r"^[a-z][a-z0-9_]{0,39}$")

DURATION = "azdo_gateway_request_duration_seconds"
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
REQUEST_LABELS = ("client", "operation_area", "method", "status")
CACHED_CHILDREN = 4096  # labelled children kept per metric for the per-request path
_RawLabels = tuple[str | None, str | None, str, int | None]  # client, area, method, status


class _Pid:
    """This process's id, asked of the kernel once and again after a fork."""

    def __init__(self) -> None:
        self.value = os.getpid()
        os.register_at_fork(after_in_child=self.refresh)

    def refresh(self) -> None:
        self.value = os.getpid()

    def __call__(self) -> int:
        return self.value


_PID = _Pid()
if values.ValueClass is not values.MutexValue:
    # Multiprocess mode: each value write checks the process id, to start new
    # files after a fork. By default that is an os.getpid() system call per
    # write (four a request); the remembered id answers the same.
    values.ValueClass = values.MultiProcessValue(process_identifier=_PID)  # type: ignore[no-untyped-call]


def multiprocess_dir() -> str | None:
    """The directory shared by worker processes, if running with several."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return path if path and os.path.isdir(path) else None


def _method(method: str) -> str:
    return method if method in METHODS else OTHER


def _status(status: int | None) -> str:
    return str(status) if status is not None and 100 <= status <= 599 else NONE


class Metrics:
    """All metrics of one process. Inject `registry` in tests."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, names: Iterable[str] = ()
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._names: frozenset[str] = frozenset()
        self._credentials: frozenset[str] = frozenset()
        # The per-request children, cached by the raw values they are labelled from
        # (see `request_finished`); emptied when full and when the bounds change.
        self._finished: dict[_RawLabels, tuple[str, Histogram]] = {}
        self._upstream: dict[tuple[str, str | None], Histogram] = {}
        self.known(clients=names)
        r = self.registry
        # azdo_gateway_requests_total is the count of request_duration (_RequestsCollector)
        r.register(_RequestsCollector(self))
        self.request_duration = Histogram(
            DURATION,
            "Time from request to the end of the response, as seen by the gateway.",
            REQUEST_LABELS,
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.upstream_duration = Histogram(
            "azdo_gateway_upstream_duration_seconds",
            "Time Azure DevOps took to answer (to the response headers).",
            ("host", "operation_area"),
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.denied = Counter(
            "azdo_gateway_denied_total",
            "Requests the gateway answered itself with an error, by client and reason.",
            ("client", "reason"),
            registry=r,
        )
        self.report_only = Counter(
            "azdo_gateway_report_only_denials_total",
            "Requests a client in `mode: report` made that enforce mode would have denied.",
            ("client", "reason"),
            registry=r,
        )
        self.token_acquisitions = Counter(
            "azdo_gateway_token_acquisitions_total",
            "Upstream token acquisitions from the identity provider, by credential and result.",
            ("credential", "result"),
            registry=r,
        )
        self.token_cache_hits = Counter(
            "azdo_gateway_token_cache_hits_total",
            "Upstream tokens served from the cache.",
            ("credential",),
            registry=r,
        )
        self._token_expiry_ts = Gauge(
            "azdo_gateway_token_expiry_timestamp_seconds",
            "Unix time the cached upstream token of a credential expires.",
            ("credential",),
            multiprocess_mode="livemax",
            registry=r,
        )
        self.inflight = Gauge(
            "azdo_gateway_inflight_requests",
            "Requests being handled right now.",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.upstream_throttled = Counter(
            "azdo_gateway_upstream_throttled_total",
            "Upstream 429 answers (Azure DevOps "
            "throttling), by credential and the client whose request got it.",
            ("credential", "client"),
            registry=r,
        )
        self.upstream_delayed = Counter(
            "azdo_gateway_upstream_pressure_delays_total",
            "Requests the gateway slowed "
            "because their credential neared its Azure DevOps rate limit.",
            ("credential", "client"),
            registry=r,
        )
        self.upstream_remaining = Gauge(
            "azdo_gateway_upstream_ratelimit_remaining",
            "Last X-RateLimit-Remaining Azure DevOps reported for a credential.",
            ("credential",),
            multiprocess_mode="livemostrecent",
            registry=r,
        )
        self.upstream_limit = Gauge(
            "azdo_gateway_upstream_ratelimit_limit",
            "Last X-RateLimit-Limit Azure DevOps reported for a credential.",
            ("credential",),
            multiprocess_mode="livemostrecent",
            registry=r,
        )
        self.reloads = Counter(
            "azdo_gateway_config_reloads_total",
            "Configuration reloads, by result.",
            ("result",),
            registry=r,
        )
        self.rewrite_skipped = Counter(
            "azdo_gateway_rewrite_skipped_total",
            "Answers whose body was passed through without URL rewriting because it "
            "could not be rewritten faithfully, by reason.",
            ("reason",),
            registry=r,
        )
        self._key_expiry: dict[tuple[str, str], float] = {}  # (client, key id) -> epoch
        self.state_errors = Counter(
            "azdo_gateway_state_errors_total",
            "Calls to the shared state backend (Redis) that failed or timed out, by "
            "operation; each one a limit that failed open (or closed) or a token "
            "from this process's cache.",
            ("operation",),
            registry=r,
        )
        self.state_up = Gauge(
            "azdo_gateway_state_up",
            "1 while the shared state backend answers, 0 while it is unavailable.",
            multiprocess_mode="livemin",
            registry=r,
        )
        self.registry.register(_ExpiryCollector(self))

    # --- label bounding --------------------------------------------------

    def known(self, *, clients: Iterable[str] = (), credentials: Iterable[str] = ()) -> None:
        """Declare the configured client and credential names (on start and reload)."""
        self._names = frozenset(clients)
        self._credentials = frozenset(credentials)
        self._finished.clear()  # a client's label may differ now
        self._upstream.clear()

    def client(self, name: str | None) -> str:
        if name is None:
            return NONE
        return name if name in self._names or not self._names and _NAME.match(name) else OTHER

    def credential(self, name: str | None) -> str:
        if name is None:
            return NONE
        if name in self._credentials or not self._credentials and _NAME.match(name):
            return name
        return OTHER

    @staticmethod
    def reason(reason: str | None) -> str:
        return reason if reason in REASONS else OTHER

    # --- events ----------------------------------------------------------

    def request_finished(self, ctx: RequestContext, seconds: float) -> None:
        identity, match = ctx.identity, ctx.match
        # Most requests repeat a few (client, area, method, status) tuples: the label
        # bounding and the prometheus child lookups run once per tuple, not per request.
        # Client names come from the configuration and areas from the catalog; the
        # method, which the caller chooses, is bounded first (keys stay small).
        method = ctx.method
        raw = (
            identity.client if identity else None,
            match.operation.area if match else None,
            method if method in METHODS else OTHER,
            ctx.status,
        )
        children = self._finished.get(raw)
        if children is None:
            children = self._request_children(raw)
        client, duration = children
        duration.observe(seconds)  # counted in azdo_gateway_requests_total too
        if ctx.upstream_seconds is not None:
            upstream = self._upstream.get((ctx.host, raw[1]))
            if upstream is None:
                upstream = self._upstream_child(ctx.host, raw[1])
            upstream.observe(ctx.upstream_seconds)
        if ctx.error_reason is not None and (ctx.status or 0) >= 400:
            self.denied.labels(client, self.reason(ctx.error_reason)).inc()
        decision = ctx.decision
        if decision is not None and decision.report_only:
            self.report_only.labels(client, self.reason(decision.reason)).inc()

    @staticmethod
    def _area(area: str | None) -> str:
        return NONE if area is None else area if _NAME.match(area) else OTHER

    def _request_children(self, raw: _RawLabels) -> tuple[str, Histogram]:
        name, area, method, status = raw
        labels = (self.client(name), self._area(area), _method(method), _status(status))
        if len(self._finished) >= CACHED_CHILDREN:
            self._finished.clear()
        children = self._finished[raw] = (labels[0], self.request_duration.labels(*labels))
        return children

    def _upstream_child(self, host: str, area: str | None) -> Histogram:
        if len(self._upstream) >= CACHED_CHILDREN:
            self._upstream.clear()
        child = self._upstream[(host, area)] = self.upstream_duration.labels(
            host if _NAME.match(host) else OTHER, self._area(area)
        )
        return child

    def token_acquired(self, credential: str, result: str) -> None:
        """An acquisition from the identity provider: result `ok` or a failure reason."""
        self.token_acquisitions.labels(
            self.credential(credential), result if _RESULT.match(result) else OTHER
        ).inc()

    def token_cache_hit(self, credential: str) -> None:
        self.token_cache_hits.labels(self.credential(credential)).inc()

    def token_expiry(self, credential: str, expires_at: float | None) -> None:
        """The cached token of `credential` expires at `expires_at` (epoch seconds)."""
        if expires_at is not None:
            self._token_expiry_ts.labels(self.credential(credential)).set(expires_at)

    def key_expiries(self, keys: Iterable[tuple[str, str, float]]) -> None:
        """The configured keys that expire: (client, key id, epoch seconds); on start and
        reload. Keys without an expiry have no series."""
        self._key_expiry = {(client, key_id): at for client, key_id, at in keys}

    def throttled(self, credential: str | None, client: str | None) -> None:
        self.upstream_throttled.labels(self.credential(credential), self.client(client)).inc()

    def pressure_delay(self, credential: str | None, client: str | None) -> None:
        self.upstream_delayed.labels(self.credential(credential), self.client(client)).inc()

    def upstream_rate_limit(self, credential: str, remaining: float, limit: float) -> None:
        cred = self.credential(credential)
        self.upstream_remaining.labels(cred).set(remaining)
        self.upstream_limit.labels(cred).set(limit)

    def rewrite_skip(self, reason: str) -> None:
        """A body passed through unrewritten (reasons: gateway.proxy.rewrite)."""
        self.rewrite_skipped.labels(reason if _RESULT.match(reason) else OTHER).inc()

    def reloaded(self, ok: bool) -> None:
        self.reloads.labels("success" if ok else "failure").inc()

    def state_error(self, operation: str) -> None:
        self.state_errors.labels(operation).inc()

    def set_state_up(self, up: bool) -> None:
        self.state_up.set(1 if up else 0)

    # --- exposition ------------------------------------------------------

    def render(self) -> bytes:
        """The text exposition format; merged over all workers when there are several."""
        path = multiprocess_dir()
        if path is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        collector = MultiProcessCollector(None, path=path)  # type: ignore[no-untyped-call]
        merged.register(_Merged(collector, self))
        return generate_latest(merged)


def _expiry_family(timestamps: Iterable[Metric], now: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "azdo_gateway_token_expiry_seconds",
        "Seconds until the cached upstream token of a credential expires (negative: expired).",
        labels=("credential",),
    )
    for metric in timestamps:
        for sample in metric.samples:
            family.add_metric([sample.labels["credential"]], sample.value - now)
    return family


def _key_expiry_family(keys: dict[tuple[str, str], float], now: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "azdo_gateway_key_expiry_seconds",
        "Seconds until a client's gateway key expires (negative: expired); keys with an "
        "`expires` only.",
        labels=("client", "key_id"),
    )
    for (client, key_id), at in sorted(keys.items()):
        family.add_metric([client, key_id], at - now)
    return family


class _ExpiryCollector(Collector):
    """Derives seconds-to-expiry at scrape time from the stored expiry timestamps."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        now = time.time()
        yield _expiry_family(self._metrics._token_expiry_ts.collect(), now)
        yield _key_expiry_family(self._metrics._key_expiry, now)


def _requests_family(durations: Iterable[Metric]) -> CounterMetricFamily:
    """azdo_gateway_requests_total: per label set, the `_count` of request_duration
    (with its `_created`, when the library reports one)."""
    counts: dict[tuple[str, ...], float] = {}
    created: dict[tuple[str, ...], float] = {}
    for metric in durations:
        for sample in metric.samples:
            if sample.name == DURATION + "_count":
                counts[tuple(sample.labels[k] for k in REQUEST_LABELS)] = sample.value
            elif sample.name == DURATION + "_created":
                created[tuple(sample.labels[k] for k in REQUEST_LABELS)] = sample.value
    family = CounterMetricFamily(
        "azdo_gateway_requests",
        "Requests answered, by client, operation area, method and status.",
        labels=REQUEST_LABELS,
    )
    for labels, count in counts.items():
        family.add_metric(labels, count, created.get(labels))
    return family


class _RequestsCollector(Collector):
    """azdo_gateway_requests_total, read from request_duration at scrape time: every
    request answered is one observation there, under the same labels, so the
    request path updates one metric instead of two."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield _requests_family(self._metrics.request_duration.collect())


class _Merged(Collector):
    """All workers' values, plus the derived seconds-to-expiry gauges and request count."""

    def __init__(self, source: MultiProcessCollector, metrics: Metrics) -> None:
        self._source = source
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        expiry: list[Metric] = []
        for metric in self._source.collect():  # type: ignore[no-untyped-call]
            if metric.name == "azdo_gateway_token_expiry_timestamp_seconds":
                expiry.append(metric)
            elif metric.name == DURATION:
                yield _requests_family([metric])
            yield metric
        now = time.time()
        yield _expiry_family(expiry, now)
        yield _key_expiry_family(self._metrics._key_expiry, now)
