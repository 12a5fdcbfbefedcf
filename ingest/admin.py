"""Admin views of ingest runs, their batches and rejected rows (read-only: workers write them)."""

from django.contrib import admin

from ingest.models import IngestBatch, IngestRun, RejectedRow


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class RejectedRowInline(admin.TabularInline):
    model = RejectedRow
    fields = ["line", "reason", "raw"]
    readonly_fields = fields
    extra = 0
    max_num = 0
    show_change_link = True
    classes = ["collapse"]


@admin.register(IngestRun)
class IngestRunAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "file_name",
        "status",
        "rows_published",
        "rows_stored",
        "rows_rejected",
        "batches_failed",
        "started_at",
        "finished_at",
    ]
    list_filter = ["status"]
    search_fields = ["file_name", "checksum"]
    inlines = [RejectedRowInline]


@admin.register(IngestBatch)
class IngestBatchAdmin(ReadOnlyAdmin):
    list_display = [
        "run",
        "number",
        "status",
        "attempts",
        "rows",
        "stored",
        "rejected",
        "updated_at",
    ]
    list_filter = ["status"]
    search_fields = ["run__id"]


@admin.register(RejectedRow)
class RejectedRowAdmin(ReadOnlyAdmin):
    list_display = ["run", "line", "reason", "raw"]
    search_fields = ["reason", "raw"]
    list_filter = ["run"]
