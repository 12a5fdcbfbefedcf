"""Admin of ingest runs, their batches and rejected rows (read-only: workers write them), and
the "Import users" page: upload a CSV file, follow its run to the totals.

Importing, following a run's progress and re-queueing failed batches write users, so they need
a staff account with the `users.add_user` permission, like the API's writes. Rejected rows and
failed batches hold what the file said (names, email addresses): they are shown only to accounts
that may read users (`users.view_user`), as the API would; others see them redacted.
"""

from __future__ import annotations

import os
import re

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
    publish_upload,
    too_large_message,
    upload_name,
)
from users.access import may_import

# How often the run page asks for its progress while the run goes on (milliseconds).
PROGRESS_POLL_MS = 1000


PERSONAL_DATA_PERMISSION = "users.view_user"
HIDDEN = "(hidden: needs the permission to view users)"


def can_see_personal_data(request: HttpRequest) -> bool:
    return request.user.has_perm(PERSONAL_DATA_PERMISSION)


def redacted_reason(reason: str) -> str:
    """A reject's reason without the value it quotes: the rules quote the offending value
    (users.validation: "email_address: not a valid email address: 'ann@'")."""
    quoted = re.search(r"['\"]", reason)
    return reason if quoted is None else f"{reason[: quoted.start()].rstrip()} …"


class PersonalDataRedacted:
    """For an account without PERSONAL_DATA_PERMISSION, each field named in `personal` is shown
    as its stand-in (a display method of the admin; None: not at all), in forms, inlines and
    list columns, and is not searched (a search would tell whether a value is there)."""

    personal: dict[str, str | None] = {}

    def _redacted(self, request: HttpRequest, names) -> list[str]:
        if can_see_personal_data(request):
            return list(names)
        return [self.personal.get(n, n) for n in names if self.personal.get(n, n) is not None]

    def get_fields(self, request, obj=None):
        return self._redacted(request, self.fields)

    def get_readonly_fields(self, request, obj=None):
        return self._redacted(request, self.fields)  # every field: workers write these records

    def get_list_display(self, request):
        return self._redacted(request, super().get_list_display(request))

    def get_search_fields(self, request):
        fields = super().get_search_fields(request)
        if can_see_personal_data(request):
            return fields
        return [name for name in fields if name not in self.personal]

    @admin.display(description="reason")
    def reason_redacted(self, row: RejectedRow) -> str:
        return redacted_reason(row.reason)

    @admin.display(description="payload")
    def payload_hidden(self, batch: IngestBatch) -> str:
        return HIDDEN if batch.payload is not None else "-"


def can_import(request: HttpRequest) -> bool:
    return may_import(request.user)


def compact_time(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class RejectedRowInline(PersonalDataRedacted, admin.TabularInline):
    model = RejectedRow
    fields = ["line", "reason", "raw"]
    personal = {"reason": "reason_redacted", "raw": None}
    extra = 0
    max_num = 0
    show_change_link = True
    classes = ["collapse"]


class ImportForm(forms.Form):
    file = forms.FileField(
        label="CSV file",
        help_text=f"Columns {', '.join(COLUMNS)} (the publish_csv contract, see docs/ingest.md).",
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
        extra = {
            "can_import": can_import(request),
            "poll_ms": PROGRESS_POLL_MS,
            # The page shows the run's status as its label; its script does the same.
            "status_labels": dict(IngestRun.Status.choices),
        }
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
class IngestBatchAdmin(PersonalDataRedacted, ReadOnlyAdmin):
    fields = ["run", "number", "status", "attempts", "rows", "stored", "rejected", "error",
              "payload", "updated_at"]  # fmt: skip
    personal = {"payload": "payload_hidden"}
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
class RejectedRowAdmin(PersonalDataRedacted, ReadOnlyAdmin):
    fields = ["run", "line", "reason", "raw"]
    personal = {"reason": "reason_redacted", "raw": None}
    list_display = ["run", "line", "reason", "raw"]
    search_fields = ["reason", "raw"]
    list_filter = ["run"]
