"""The ingest figures of `/metrics`, read at scrape time from the recorded runs and batches
(ingest.selectors) and the broker; registered through settings.METRICS_COLLECTORS."""

from __future__ import annotations

import logging

from django.conf import settings
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ingest.selectors import ingest_queue_depth, ingest_totals

logger = logging.getLogger(__name__)


class IngestCollector(Collector):
    """Rows published/stored/rejected, retries, dead letters, runs by status, queue depth."""

    def collect(self):
        yield from self._totals()
        depth = ingest_queue_depth()
        queue = GaugeMetricFamily(
            "ingest_queue_depth",
            "Messages (batches) ready on the ingest queue; -1 when the broker cannot be read.",
            labels=["queue"],
        )
        queue.add_metric([settings.INGEST_QUEUE], -1 if depth is None else depth)
        yield queue

    @staticmethod
    def _totals():
        try:
            totals = ingest_totals()
        except Exception as error:  # the scrape must still answer with the other metrics
            logger.warning("metrics: cannot read ingest records: %s", error)
            return
        for name, documentation, value in (
            ("ingest_rows_published", "Rows publish_csv put on the queue.", totals.published),
            ("ingest_rows_stored", "Rows workers stored.", totals.stored),
            ("ingest_rows_rejected", "Rows rejected (with a reason).", totals.rejected),
            (
                "ingest_batches_retried",
                "Extra deliveries of batches (retries after errors, redeliveries).",
                totals.retries,
            ),
            ("ingest_batches_failed", "Batches given up on (dead letters).", totals.failed_batches),
        ):
            family = CounterMetricFamily(name, documentation)
            family.add_metric([], value)
            yield family
        runs = GaugeMetricFamily("ingest_runs", "Ingest runs by status.", labels=["status"])
        for status, count in totals.runs_by_status.items():
            runs.add_metric([status], count)
        yield runs
