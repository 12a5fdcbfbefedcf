"""Prometheus metrics: the HTTP middleware, SSE gauges/counters, ingest figures and `/metrics`.

Web processes. uvicorn runs several worker processes; each keeps its own counters, so they are
written to files in a shared directory (prometheus-client's multiprocess mode) and `/metrics`
sums them, whichever worker answers. The directory is `PROMETHEUS_MULTIPROC_DIR`, which the
process start sets: scripts/web.sh (the Procfile's `web:` line, the image's CMD) gives each
server an empty one. Without it (`manage.py runserver`, a single process) the metrics stay in
memory. Under a forking server (gunicorn), set PROMETHEUS_MULTIPROC_DIR to an empty directory.

Ingest (ingest/metrics.py, registered through settings.METRICS_COLLECTORS). The figures are
read at scrape time from what the pipeline records anyway: sums over
`IngestRun`/`IngestBatch` in PostgreSQL and the ingest queue's depth from a passive queue
declare on the broker. A worker-side exporter was the alternative; it was not chosen because
(1) the records are exact under at-least-once delivery (counts live per batch and are rewritten
on redelivery), where a worker's counter would count a redelivered batch twice and lose what a
killed worker had counted; (2) workers scale across hosts and restart freely, and a
scrape target per prefork worker host would be needed to see them, while every web process can
answer for the whole pipeline; (3) Celery prefork children would need their own multiprocess
directory and cleanup. The cost is two aggregate queries and one broker round trip per scrape
(milliseconds; scrapes come every 15-60 s).
"""

from __future__ import annotations

import glob
import hmac
import logging
import os
import re
import time

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.utils.decorators import sync_and_async_middleware
from django.utils.module_loading import import_string
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

logger = logging.getLogger(__name__)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _prepare_multiprocess_dir(path: str) -> None:
    """Create the shared directory if missing and remove the files no process should sum.

    The directory is new (or emptied) for each server, but uvicorn's supervisor restarts a
    worker that dies, within the same directory, and nothing tells prometheus-client the old
    one is gone (gunicorn has a hook for `mark_process_dead`; uvicorn has none). So each worker,
    as it starts, removes the live gauges of processes that are gone (they would be summed
    forever: the open streams of a crashed worker), and any file named after its own pid,
    which an earlier worker with the same pid left."""
    os.makedirs(path, exist_ok=True)
    for file in glob.glob(os.path.join(path, "*.db")):
        match = re.search(r"_(\d+)\.db$", file)
        if not match:
            continue
        pid = int(match.group(1))
        stale_gauge = os.path.basename(file).startswith("gauge_live")
        if pid == os.getpid() or (stale_gauge and not _process_alive(pid)):
            try:
                os.remove(file)
            except FileNotFoundError:
                pass


# Set by the process start (scripts/web.sh) before prometheus-client is imported, which is when
# it picks its value store: files in this directory, or memory without it.
MULTIPROCESS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
if MULTIPROCESS_DIR:
    _prepare_multiprocess_dir(MULTIPROCESS_DIR)  # before the metrics below open their files

# --- HTTP -----------------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "http_requests",
    "HTTP requests answered, by route pattern, method and status.",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time to produce the response (to the first byte for streams), by route, method, status.",
    ["route", "method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# --- Server-Sent Events ---------------------------------------------------------------------
SSE_OPEN_STREAMS = Gauge(
    "sse_open_streams",
    "SSE streams currently open, summed over web processes.",
    multiprocess_mode="livesum",
)
SSE_EVENTS_SENT = Counter(
    "sse_events_sent",
    "Events written to SSE clients (summed over open streams, control events included).",
)
# Both are kept by metrics_middleware around every text/event-stream response, so they cover
# events from any source (API writes in web processes, ingest batches from Celery workers):
# the web process is where they reach clients, and the only place that is scraped.


def route_of(request) -> str:
    """The URL pattern that served the request (bounded label values), never the raw path."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        return "<unmatched>"
    return "/" + match.route if match.route else (match.view_name or "<unnamed>")


@sync_and_async_middleware
def metrics_middleware(get_response):
    """Count and time every request by route and status. Async-capable and cheap."""
    if iscoroutinefunction(get_response):

        async def middleware(request):
            started = time.perf_counter()
            response = await get_response(request)
            _observe(request, response, time.perf_counter() - started)
            if response.streaming and response.is_async and _is_event_stream(response):
                response.streaming_content = _counted_stream(response.streaming_content)
            return response

    else:

        def middleware(request):
            started = time.perf_counter()
            response = get_response(request)
            _observe(request, response, time.perf_counter() - started)
            return response

    return middleware


def _observe(request, response, seconds: float) -> None:
    observe_request(route_of(request), request.method, response.status_code, seconds)


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    """Record one answered request (also called by the ASGI fast path ahead of Django)."""
    labels = (route, method if method in _METHODS else "other", str(status))
    HTTP_REQUESTS.labels(*labels).inc()
    HTTP_LATENCY.labels(*labels).observe(seconds)


EVENT_STREAM = "text/event-stream"


def _is_event_stream(response) -> bool:
    return response.get("Content-Type", "").startswith(EVENT_STREAM)


async def _counted_stream(chunks):
    """Pass an SSE stream through, keeping the open-streams gauge and the events counter."""
    SSE_OPEN_STREAMS.inc()
    try:
        async for chunk in chunks:
            events = chunk.startswith(b"event:") + chunk.count(b"\nevent:")
            if events:
                SSE_EVENTS_SENT.inc(events)
            yield chunk
    finally:  # also on client disconnect and on server shutdown (the task is cancelled)
        SSE_OPEN_STREAMS.dec()


def metrics_registry() -> CollectorRegistry:
    if MULTIPROCESS_DIR:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=MULTIPROCESS_DIR)
    else:
        registry = CollectorRegistry()
        for collector in (HTTP_REQUESTS, HTTP_LATENCY, SSE_OPEN_STREAMS, SSE_EVENTS_SENT):
            registry.register(collector)
    # The apps' figures, read at scrape time (ingest/metrics.py, users/metrics.py).
    for path in settings.METRICS_COLLECTORS:
        registry.register(import_string(path)())
    return registry


def scrape_refusal(request):
    """The response refusing a scrape without `Authorization: Bearer $METRICS_TOKEN`, or None.

    Unset METRICS_TOKEN: 403 saying how to enable the endpoint (closed by default: the figures
    describe the deployment). A missing or wrong token: 401 with WWW-Authenticate. The token
    is compared in constant time."""
    from django.conf import settings
    from django.http import JsonResponse

    from users.error_bodies import error_data

    token = settings.METRICS_TOKEN
    if not token:
        return JsonResponse(
            error_data(
                "/metrics is disabled: set METRICS_TOKEN on the server and scrape "
                "with the header 'Authorization: Bearer <METRICS_TOKEN>'."
            ),
            status=403,
        )
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
        return None
    response = JsonResponse(
        error_data("Send the metrics token: 'Authorization: Bearer <METRICS_TOKEN>'."), status=401
    )
    response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


def metrics_view(request):
    """`GET /metrics`: Prometheus text format, for the whole server (every worker process)."""
    from django.http import HttpResponse

    if (refusal := scrape_refusal(request)) is not None:
        return refusal
    return HttpResponse(generate_latest(metrics_registry()), content_type=CONTENT_TYPE_LATEST)
