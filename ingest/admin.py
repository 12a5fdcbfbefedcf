"""Admin of ingest runs, their batches and rejected rows (read-only: workers write them), and
the "Import users" page: upload a CSV file, follow its run to the totals.

Importing, following a run's progress and re-queueing failed batches write users, so they need
a staff account with the `users.add_user` permission, like the API's writes.
"""

from __future__ import annotations

import os

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import csrf_exempt, csrf_protect

from ingest import selectors
from ingest.models import IngestBatch, IngestRun, RejectedRow
from ingest.parsing import COLUMNS, CsvFileError
from ingest.publishing import requeue_failed_batches
from ingest.uploads import (
    ImportBusy,
    LimitedTemporaryFileUploadHandler,
    keep_upload,
    may_import,
    publish_upload,
    too_large_message,
    upload_name,
)

# How often the run page asks for its progress while the run goes on (milliseconds).
PROGRESS_POLL_MS = 1000


def can_import(request: HttpRequest) -> bool:
    return may_import(request.user)


def compact_time(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


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


class ImportForm(forms.Form):
    file = forms.FileField(
        label="CSV file",
        help_text=f"Columns {', '.join(COLUMNS)} (the publish_csv contract, see README).",
    )


@admin.register(IngestRun)
class IngestRunAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "file",
        "status",
        "rows_published",
        "rows_stored",
        "rows_rejected",
        "batches_failed",
        "started",
        "finished",
    ]
    list_display_links = ["id", "file"]
    list_filter = ["status"]
    search_fields = ["file_name", "checksum"]
    inlines = [RejectedRowInline]
    actions = ["requeue_failed"]
    change_form_template = "admin/ingest/ingestrun/change_form.html"
    change_list_template = "admin/ingest/ingestrun/change_list.html"

    @admin.display(description="file", ordering="file_name")
    def file(self, run: IngestRun) -> str:
        return os.path.basename(run.file_name) or run.file_name

    @admin.display(description="started", ordering="started_at")
    def started(self, run: IngestRun) -> str:
        return compact_time(run.started_at)

    @admin.display(description="finished", ordering="finished_at")
    def finished(self, run: IngestRun) -> str:
        return compact_time(run.finished_at)

    def has_requeue_permission(self, request: HttpRequest) -> bool:
        return can_import(request)

    @admin.action(permissions=["requeue"], description="Re-queue the failed batches of the runs")
    def requeue_failed(self, request: HttpRequest, queryset) -> None:
        for run_id in queryset.values_list("id", flat=True):
            count = requeue_failed_batches(run_id=run_id)
            level = messages.SUCCESS if count else messages.INFO
            self.message_user(request, f"run {run_id}: re-queued {count} failed batch(es)", level)

    def get_urls(self):
        urls = [
            path(
                "import/",
                self.admin_site.admin_view(self.import_view),
                name="ingest_ingestrun_import",
            ),
            path(
                "<int:run_id>/progress/",
                self.admin_site.admin_view(self.progress_view),
                name="ingest_ingestrun_progress",
            ),
        ]
        return urls + super().get_urls()

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(
            request, {**(extra_context or {}), "can_import": can_import(request)}
        )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra = {"can_import": can_import(request), "poll_ms": PROGRESS_POLL_MS}
        if extra["can_import"] and object_id.isdigit():
            extra["progress_url"] = reverse(
                "admin:ingest_ingestrun_progress", args=[int(object_id)]
            )
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **extra})

    # Upload handlers must be in place before anything reads the body, CSRF checking
    # included: the view is exempt from the middleware and checks the token itself, after.
    @method_decorator(csrf_exempt)
    def import_view(self, request: HttpRequest) -> HttpResponse:
        if not can_import(request):
            raise PermissionDenied
        limiter = LimitedTemporaryFileUploadHandler(request)
        request.upload_handlers = [limiter]
        return self._import_view(request, limiter)

    @method_decorator(csrf_protect)
    def _import_view(
        self, request: HttpRequest, limiter: LimitedTemporaryFileUploadHandler
    ) -> HttpResponse:
        form = ImportForm()
        status = 200
        if request.method == "POST":
            form = ImportForm(request.POST, request.FILES)
            if limiter.too_large:
                form.add_error(None, too_large_message())
                status = 413
            elif form.is_valid():
                upload = form.cleaned_data["file"]
                name = upload_name(upload.name)
                try:
                    run = publish_upload(
                        path=keep_upload(upload.temporary_file_path()), file_name=name
                    )
                except (CsvFileError, ImportBusy) as error:
                    form.add_error("file", f"{upload.name}: {error}")
                    status = 400
                else:
                    self.message_user(
                        request, f"Import started: run {run.id} ({name})", messages.SUCCESS
                    )
                    return redirect("admin:ingest_ingestrun_change", run.id)
            else:
                status = 400
        context = {
            **self.admin_site.each_context(request),
            "title": "Import users",
            "opts": self.model._meta,
            "form": form,
            "max_bytes": limiter.max_bytes,
            "max_mib": f"{limiter.max_bytes / 2**20:,.1f}",
        }
        return TemplateResponse(
            request, "admin/ingest/ingestrun/import.html", context, status=status
        )

    def progress_view(self, request: HttpRequest, run_id: int) -> JsonResponse:
        if not can_import(request):
            raise PermissionDenied
        progress = selectors.ingest_run_progress(run_id=run_id)
        if progress is None:
            raise Http404("no such run")
        return JsonResponse(progress, headers={"Cache-Control": "no-store"})


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
