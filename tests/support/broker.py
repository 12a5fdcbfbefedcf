"""The test run's RabbitMQ, seen from a test: what a queue nobody consumes holds."""

from __future__ import annotations


def queue_bodies(queue: str) -> list[bytes]:
    """Take every message off `queue` (nobody consumes it) and return their bodies."""
    from viswals.celery import app

    bodies = []
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            body = message.body
            bodies.append(body.encode() if isinstance(body, str) else body)
    return bodies


def queue_delete(queue: str) -> None:
    from viswals.celery import app

    with app.connection_for_write() as connection:
        connection.default_channel.queue_delete(queue)
