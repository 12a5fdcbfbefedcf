"""The users figures of `/metrics` (registered through settings.METRICS_COLLECTORS)."""

from __future__ import annotations

import logging

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from users.selectors import stale_cache_entry_count

logger = logging.getLogger(__name__)


class StaleCacheCollector(Collector):
    def collect(self):
        try:
            count = stale_cache_entry_count()
        except Exception as error:  # the scrape must still answer with the other metrics
            logger.warning("metrics: cannot count stale cache entries: %s", error)
            return
        stale = GaugeMetricFamily(
            "cache_stale_entries",
            "Users written while Redis was unreachable whose entries are not repaired yet "
            "(docs/operations.md: Redis outages); above 0 for long means Redis is still away.",
        )
        stale.add_metric([], count)
        yield stale
