"""The worker's consumer, with Celery's native delayed delivery set up through the node the
worker is connected to rather than through every broker URL.

With a quorum queue (INGEST_QUEUE_TYPE=quorum) Celery adds a consumer step that declares the
delayed-delivery exchanges and queues and binds the task queues to them, on every start of the
consumer — also after a lost connection. Celery 5.7's step does so once per URL in
CELERY_BROKER_URL, retrying each with a connect timeout, before the worker consumes again. Our
URLs are nodes of one cluster, where exchanges, queues and bindings are cluster-wide: declaring
them through one node is enough, and a dead node in the list stopped consumption for ~17 s
after every failover (measured here). This step declares them through the node the consumer has
just connected to, so a failover costs one successful round of declarations.

Installed by configuration (settings.CELERY_WORKER_CONSUMER), not by patching Celery; it
subclasses parts of Celery that are internal, so it is checked against the Celery version it
was written for (tests/ops/test_celery_steps.py fails when the pinned version moves).
"""

from __future__ import annotations

import importlib.metadata
import logging

from celery.worker.consumer import Consumer
from celery.worker.consumer.delayed_delivery import (
    MAX_RETRIES,
    RETRIED_EXCEPTIONS,
    RETRY_INTERVAL,
    DelayedDelivery,
)
from kombu.utils.functional import retry_over_time
from kombu.utils.url import maybe_sanitize_url

logger = logging.getLogger(__name__)

WRITTEN_FOR = "5.7.0"
STOCK_STEP = "celery.worker.consumer.delayed_delivery:DelayedDelivery"


def installed_version() -> str:
    return importlib.metadata.version("celery")


class ConnectedNodeDelayedDelivery(DelayedDelivery):
    """Native delayed delivery declared through the consumer's own connection."""

    def start(self, c) -> None:
        self._validate_configuration(c.app)
        url = c.connection.as_uri(include_password=True)
        try:
            retry_over_time(
                self._setup_delayed_delivery,
                args=(c, url),
                catch=RETRIED_EXCEPTIONS,
                errback=self._on_retry,
                interval_start=RETRY_INTERVAL,
                max_retries=MAX_RETRIES,
            )
        except Exception as error:  # as Celery's step: logged, the worker consumes anyway
            logger.critical(
                "delayed delivery not set up through %s (%s): tasks retried with a countdown "
                "wait in a worker instead of in RabbitMQ",
                maybe_sanitize_url(url),
                error,
            )


class ClusterConsumer(Consumer):
    """Celery's consumer with ConnectedNodeDelayedDelivery in place of its own step."""

    class Blueprint(Consumer.Blueprint):
        default_steps = [
            f"{__name__}:ConnectedNodeDelayedDelivery" if step == STOCK_STEP else step
            for step in Consumer.Blueprint.default_steps
        ]
