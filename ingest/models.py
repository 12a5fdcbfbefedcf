"""Records of ingest runs: one IngestRun per publish_csv, its batches and its rejected rows."""

from django.db import models


class IngestRun(models.Model):
    class Status(models.TextChoices):
        PUBLISHING = "publishing"
        PUBLISHED = "published"  # every batch is on the queue; workers are storing
        INDEXING = "indexing"  # a bulk run's batches are stored; its indexes are being built
        COMPLETED = "completed"  # every batch stored (rows may have been rejected)
        FAILED = "failed"  # publishing stopped, or a batch failed for good

    file_name = models.CharField(max_length=1024)
    file_size = models.BigIntegerField()
    checksum = models.CharField(max_length=64, help_text="SHA-256 of the file")
    status = models.CharField(max_length=16, choices=Status, default=Status.PUBLISHING)
    batch_size = models.PositiveIntegerField()
    started_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True)
    stored_at = models.DateTimeField(null=True, blank=True, help_text="last batch stored")
    finished_at = models.DateTimeField(null=True, blank=True)
    # Set when publishing ends; workers' counts live on IngestBatch and are summed here on
    # completion, so concurrent batches never contend for this row.
    rows_published = models.BigIntegerField(default=0)
    batches_published = models.IntegerField(default=0)
    rows_stored = models.BigIntegerField(default=0)
    rows_rejected = models.BigIntegerField(default=0)
    batches_failed = models.IntegerField(default=0)
    error = models.TextField(blank=True)
    # Loaded with the users table's primary key only: the other indexes are built once its
    # last batch is stored, and the run completes when they are (ingest.indexes).
    bulk = models.BooleanField(default=False)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"run {self.id}: {self.file_name} ({self.status})"


class IngestBatch(models.Model):
    """One published batch, written by the worker that stores it (idempotent per number)."""

    class Status(models.TextChoices):
        STARTED = "started"
        STORED = "stored"
        FAILED = "failed"

    run = models.ForeignKey(IngestRun, on_delete=models.CASCADE, related_name="batches")
    number = models.IntegerField()
    status = models.CharField(max_length=16, choices=Status, default=Status.STARTED)
    attempts = models.IntegerField(default=0)
    rows = models.IntegerField(default=0)
    stored = models.IntegerField(default=0)
    rejected = models.IntegerField(default=0)
    error = models.TextField(blank=True)
    # A failed batch keeps its message so it can be inspected and re-queued (dead letter).
    payload = models.JSONField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["run", "number"]
        verbose_name_plural = "ingest batches"
        constraints = [
            models.UniqueConstraint(fields=["run", "number"], name="ingest_batch_unique_number")
        ]

    def __str__(self) -> str:
        return f"run {self.run_id} batch {self.number} ({self.status})"


class RejectedRow(models.Model):
    run = models.ForeignKey(IngestRun, on_delete=models.CASCADE, related_name="rejected_rows")
    line = models.IntegerField(help_text="1-based line in the file; the header is line 1")
    reason = models.TextField()
    raw = models.TextField(blank=True)

    class Meta:
        ordering = ["run", "line"]
        constraints = [
            models.UniqueConstraint(fields=["run", "line"], name="ingest_rejected_unique_line")
        ]

    def __str__(self) -> str:
        # Not the reason: it may quote the row's values (ingest.admin shows them by permission).
        return f"run {self.run_id} line {self.line}"
