"""factory_boy factories for model rows tests need: users of the directory and ingest runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import factory

from ingest.models import IngestRun
from users.models import User


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User

    id = factory.Sequence(lambda n: 1000 + n)
    first_name = factory.Faker("first_name")
    last_name = factory.Faker("last_name")
    email_address = factory.LazyAttribute(
        lambda u: f"{u.first_name}.{u.last_name}{u.id}@example.com".lower()
    )
    created_at = factory.Sequence(lambda n: datetime(2020, 1, 1, tzinfo=UTC) + timedelta(hours=n))


class IngestRunFactory(factory.django.DjangoModelFactory):
    """A run record as publish_csv makes it, for tests that store or queue batches by hand:
    `IngestRunFactory(file_name="broken.csv", rows_published=1, batches_published=1)`."""

    class Meta:
        model = IngestRun

    file_name = factory.Sequence(lambda n: f"run-{n}.csv")
    file_size = 1
    checksum = "x"
    batch_size = 2
    status = IngestRun.Status.PUBLISHED
