"""The admin's "Import users" page: an upload goes through publish_csv's producer to the
workers, its run's progress is served to staff who may add users, and unusable or too large
uploads are refused with a message."""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import tempfile

import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile

from ingest.models import IngestBatch, IngestRun, RejectedRow
from tests.support.chromium import Page, chromium
from tests.support.factories import IngestRunFactory
from tests.support.waits import wait_until
from users.models import User

pytestmark = pytest.mark.django_db(transaction=True)

IMPORT_URL = "/admin/ingest/ingestrun/import/"


def import_csv(csv_header: str) -> str:
    return "\n".join(
        [
            csv_header,
            # Long values and every column set: the admin's lists must still fit 1400 px.
            "501,Annabelle-Josephine,Featherstonehaugh-Smythe,"
            "annabelle-josephine.featherstonehaugh-smythe@example-corporation.com,"
            "1577836800000,1609459200000,1612137600000,503",
            "502,Bob,Bold,not-an-email,1577836800000,-1,-1,-1",
            "503,Cy,Calm,cy@example.com,1577836800000,-1,-1,-1",
            "x,Dee,Dot,dee@example.com,1577836800000,-1,-1,-1",
            "505,Eve,Even,eve@example.com,1577836800000,1609459200000,-1,-1",
        ]
    )


@pytest.fixture
def importer(client, django_user_model, plain_static_storage):
    user = django_user_model.objects.create_user("importer", password="pw", is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(codename="add_user", content_type__app_label="users"),
        Permission.objects.get(codename="view_ingestrun"),
    )
    client.force_login(user)
    return client


def leftover_uploads() -> list[str]:
    return glob.glob(os.path.join(tempfile.gettempdir(), "viswals-import-*"))


def wait_for_progress(client, run_id: int, timeout: float = 60) -> dict:
    """The run's progress, as its page reads it, once it says the run is finished."""

    def finished() -> dict | None:
        progress = client.get(f"/admin/ingest/ingestrun/{run_id}/progress/").json()
        return progress if progress["finished"] else None

    return wait_until(finished, timeout, "the run did not finish")


def test_upload_is_published_stored_and_its_progress_ends_with_the_totals(
    importer, celery_worker_process, csv_header
):
    upload = SimpleUploadedFile("people.csv", import_csv(csv_header).encode(), "text/csv")
    response = importer.post(IMPORT_URL, {"file": upload})

    run = IngestRun.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/admin/ingest/ingestrun/{run.id}/change/"
    assert run.file_name == "upload: people.csv"
    progress = wait_for_progress(importer, run.id)
    assert progress["status"] == "completed"
    assert (progress["published"], progress["stored"], progress["rejected"]) == (5, 3, 2)
    assert [reject["line"] for reject in progress["rejects"]] == [3, 5]
    assert "email_address" in progress["rejects"][0]["reason"]
    assert "id" in progress["rejects"][1]["reason"]
    assert set(User.objects.values_list("id", flat=True)) == {501, 503, 505}
    assert not leftover_uploads()
    # The run's page carries the progress panel.
    page = importer.get(response["Location"]).content.decode()
    assert 'id="run-progress"' in page and f"/admin/ingest/ingestrun/{run.id}/progress/" in page


def test_too_large_upload_is_refused_with_a_message(importer, settings, csv_header):
    settings.ADMIN_IMPORT_MAX_BYTES = 100
    upload = SimpleUploadedFile("big.csv", import_csv(csv_header).encode(), "text/csv")

    response = importer.post(IMPORT_URL, {"file": upload})

    assert response.status_code == 413
    assert "larger than the import limit" in response.content.decode()
    assert "ADMIN_IMPORT_MAX_BYTES" in response.content.decode()
    assert not IngestRun.objects.exists()
    assert not leftover_uploads()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"name,email\nAnn,ann@example.com\n", "missing required column"),
        (b"\xff\xfe\x00garbage\x00\n", "UTF-8"),
    ],
)
def test_unusable_file_is_refused_and_nothing_is_published(importer, content, reason):
    upload = SimpleUploadedFile("bad.csv", content, "text/csv")

    response = importer.post(IMPORT_URL, {"file": upload})

    assert response.status_code == 400
    page = response.content.decode()
    assert "bad.csv: " in page and reason.lower() in page.lower(), page[-3000:]
    assert not IngestRun.objects.exists()
    assert not leftover_uploads()


def test_import_and_progress_need_staff_with_add_user(
    client, django_user_model, plain_static_storage
):
    run = IngestRun.objects.create(file_name="f", file_size=1, checksum="0", batch_size=1)
    progress_url = f"/admin/ingest/ingestrun/{run.id}/progress/"
    assert client.get(IMPORT_URL).status_code == 302  # to the login page
    assert client.get(progress_url).status_code == 302

    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_ingestrun"))
    client.force_login(viewer)
    assert client.get(IMPORT_URL).status_code == 403
    upload = SimpleUploadedFile("people.csv", b"id\n1\n", "text/csv")
    assert client.post(IMPORT_URL, {"file": upload}).status_code == 403
    assert client.get(progress_url).status_code == 403
    assert "run-progress" not in client.get(f"/admin/ingest/ingestrun/{run.id}/change/").text
    assert not IngestRun.objects.exclude(id=run.id).exists()


def test_requeue_action_publishes_failed_batches_again(importer, celery_worker_process, csv_header):
    run = IngestRun.objects.create(
        file_name="f",
        file_size=1,
        checksum="0",
        batch_size=10,
        status=IngestRun.Status.FAILED,
        batches_published=1,
        rows_published=1,
    )
    row = [2, "601", "Fay", "Fix", "fay@example.com", "1577836800000", "-1", "-1", "-1"]
    IngestBatch.objects.create(
        run=run,
        number=1,
        status=IngestBatch.Status.FAILED,
        rows=1,
        error="database error",
        payload={"rows": [row], "rejects": []},
    )

    response = importer.post(
        "/admin/ingest/ingestrun/",
        {"action": "requeue_failed", "_selected_action": [run.id]},
        follow=True,
    )

    assert f"Run {run.id}: re-queued 1 failed batch(es)" in response.content.decode()
    progress = wait_for_progress(importer, run.id)
    assert (progress["status"], progress["stored"]) == ("completed", 1)
    assert User.objects.filter(id=601).exists()


def test_a_body_declaring_more_than_the_import_limit_is_refused_unread(settings, importer):
    from viswals.request_limits import request_limits

    cookie = (
        f"{settings.SESSION_COOKIE_NAME}={importer.cookies[settings.SESSION_COOKIE_NAME].value}"
    )

    settings.ADMIN_IMPORT_MAX_BYTES = 1000
    called, sent = [], []

    async def inner(scope, receive, send):
        called.append(scope["path"])

    async def receive():
        raise AssertionError("the body must not be read")

    async def send(message):
        sent.append(message)

    app = request_limits(inner)

    def post(path: str, length: int, cookie: str = cookie) -> None:
        headers = [(b"content-length", str(length).encode()), (b"cookie", cookie.encode())]
        scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
        asyncio.run(app(scope, receive, send))

    post(IMPORT_URL, 10_000_000)
    assert not called and sent[0]["status"] == 413
    # Within the limit (and the multipart slack) the import page gets it, past the admin's.
    settings.ADMIN_IMPORT_MAX_BYTES = 50 * 2**20
    post(IMPORT_URL, 40 * 2**20)
    assert called == [IMPORT_URL]
    # Only a session allowed to import sends more than the admin's usual limit, unread too.
    for stranger in ("", f"{settings.SESSION_COOKIE_NAME}=not-a-session"):
        post(IMPORT_URL, 40 * 2**20, cookie=stranger)
        assert called == [IMPORT_URL] and sent[-2]["status"] == 413


def _loaded(page: Page, path: str) -> bool:
    return bool(
        page.evaluate(
            f"location.pathname === {path!r} && document.readyState === 'complete' || null"
        )
    )


def _fits_the_window(page: Page) -> dict:
    """Whether the page or its results box scrolls sideways, and where the table ends."""
    return page.evaluate(
        "(() => { const box = document.querySelector('#changelist .results');"
        " return {scrolls: document.documentElement.scrollWidth > window.innerWidth"
        " || box.scrollWidth > box.clientWidth, width: window.innerWidth,"
        " doc: document.documentElement.scrollWidth, box: [box.scrollWidth, box.clientWidth],"
        " tableRight: document.querySelector('#result_list').getBoundingClientRect().right}; })()"
    )


@pytest.mark.skipif(not shutil.which("chromium"), reason="needs chromium (make system-deps)")
def test_import_in_a_browser_from_upload_to_totals_and_lists_fit_1400px(
    live_web_server, celery_worker_process, django_user_model, tmp_path, csv_header
):
    django_user_model.objects.create_superuser("chief", password="pw-for-the-test")
    csv = tmp_path / "people.csv"
    csv.write_text(import_csv(csv_header))
    login = f"{live_web_server}/admin/login/?next={IMPORT_URL}"

    with chromium(login, tmp_path / "chromium-profile", window=(1400, 900)) as page:
        wait_until(lambda: page.evaluate("!!document.getElementById('id_username')"), 15, "login")
        page.evaluate(
            "document.getElementById('id_username').value = 'chief';"
            "document.getElementById('id_password').value = 'pw-for-the-test';"
            "document.getElementById('login-form').submit()"
        )
        wait_until(lambda: _loaded(page, IMPORT_URL), 15, "import page not reached")
        page.set_file_input("#id_file", csv)
        page.evaluate("document.getElementById('import-form').requestSubmit()")

        state = "document.getElementById('run-progress')?.dataset.state"
        wait_until(lambda: page.evaluate(state) == "finished", 60, "run did not finish")
        totals = page.evaluate("document.getElementById('progress-totals').textContent")
        assert "completed: 5 rows published, 3 stored, 2 rejected." in totals, totals
        rejects = page.evaluate(
            "[...document.querySelectorAll('#progress-rejects tbody tr')]"
            ".map(row => [...row.cells].map(cell => cell.textContent))"
        )
        assert [line for line, _ in rejects] == ["3", "5"]
        assert "email_address" in rejects[0][1]
        assert page.evaluate("document.getElementById('progress-stored').textContent") == "3"

        for path in ("/admin/users/user/", "/admin/ingest/ingestrun/"):
            page.navigate(f"{live_web_server}{path}")
            wait_until(lambda path=path: _loaded(page, path), 15, f"{path} did not load")
            fit = _fits_the_window(page)
            assert not fit["scrolls"] and fit["tableRight"] <= fit["width"], (path, fit)
        headers = page.evaluate(
            "[...document.querySelectorAll('#result_list thead th')]"
            ".map(th => th.textContent.trim())"
        )
        assert "STARTED" in [header.upper() for header in headers]


@pytest.mark.parametrize("may_view_users", [False, True])
def test_rejected_rows_and_failed_payloads_show_personal_data_only_to_user_viewers(
    client, django_user_model, plain_static_storage, may_view_users
):
    """Staff who may only view ingest records see rejects and failed batches without the names
    and emails they hold (before, every page below showed them); with users.view_user, in full."""
    run = IngestRunFactory(file_name="people.csv")
    batch = IngestBatch.objects.create(
        run=run, number=0, status=IngestBatch.Status.FAILED, error="boom",
        payload={"rows": [[7, "Annabelle", "Smythe", "annabelle@example.com"]]},
    )  # fmt: skip
    reject = RejectedRow.objects.create(
        run=run, line=3, reason="email_address: not a valid email address: 'bob@bold'",
        raw="502,Bobby,Bold,bob@bold,1577836800000,-1,-1,-1",
    )  # fmt: skip
    staff = django_user_model.objects.create_user("auditor", password="pw", is_staff=True)
    codenames = ["view_ingestrun", "view_ingestbatch", "view_rejectedrow"]
    codenames += ["view_user"] if may_view_users else []
    staff.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client.force_login(staff)
    rejects = ["bob@bold", "502,Bobby,Bold"]
    pages = {
        f"/admin/ingest/ingestrun/{run.id}/change/": rejects,
        f"/admin/ingest/ingestbatch/{batch.id}/change/": ["Annabelle", "annabelle@example.com"],
        "/admin/ingest/rejectedrow/": rejects,
        f"/admin/ingest/rejectedrow/{reject.id}/change/": rejects,
    }
    for url, values in pages.items():
        response = client.get(url)
        assert response.status_code == 200, url
        body = response.content.decode()
        assert [value in body for value in values] == [may_view_users] * len(values), url
        if values is rejects:
            assert "email_address: not a valid email address" in body, url
    # Without the permission no search by value: what a search finds would tell the value.
    link = f"/admin/ingest/rejectedrow/{reject.id}/change/"
    found = [
        link in client.get("/admin/ingest/rejectedrow/", {"q": q}).content.decode()
        for q in ("bob@bold", "carol@nowhere")
    ]
    assert found == ([True, False] if may_view_users else [True, True])


def _log_in(page: Page, username: str, password: str) -> None:
    wait_until(lambda: page.evaluate("!!document.getElementById('id_username')"), 15, "login")
    page.evaluate(
        f"document.getElementById('id_username').value = {username!r};"
        f"document.getElementById('id_password').value = {password!r};"
        "document.getElementById('login-form').submit()"
    )


def _shown(page: Page, element_id: str) -> bool | None:
    return page.evaluate(
        f"(() => {{ const box = document.getElementById({element_id!r});"
        " return box ? getComputedStyle(box).display !== 'none' : null; })()"
    )


@pytest.mark.skipif(not shutil.which("chromium"), reason="needs chromium (make system-deps)")
def test_run_page_heading_and_fields_follow_the_progress_and_hide_empty_error_boxes(
    live_web_server, django_user_model, tmp_path
):
    django_user_model.objects.create_superuser("chief", password="pw-for-the-test")
    run = IngestRun.objects.create(
        file_name="upload: people.csv", file_size=10, checksum="0" * 64, batch_size=5
    )
    run_path = f"/admin/ingest/ingestrun/{run.id}/change/"
    heading = "document.querySelector('#content > h2').textContent"
    status_field = "document.querySelector('.field-status .readonly').textContent"

    with chromium(f"{live_web_server}/admin/login/?next={run_path}", tmp_path / "profile") as page:
        _log_in(page, "chief", "pw-for-the-test")
        state = "document.getElementById('run-progress')?.dataset.state"
        wait_until(lambda: page.evaluate(state) == "running", 15, "run page not polling")
        assert page.evaluate(heading).endswith("(publishing)")
        # Nothing went wrong: no empty red box, though the admin's CSS styles .errornote.
        assert _shown(page, "progress-error") is False
        assert _shown(page, "progress-totals") is False

        # Published; a worker has stored the first batch (what ingest.services records).
        IngestRun.objects.filter(id=run.id).update(
            status=IngestRun.Status.PUBLISHED, rows_published=8, batches_published=2
        )
        IngestBatch.objects.create(run=run, number=1, status="stored", rows=5, stored=3, rejected=2)
        wait_until(lambda: page.evaluate(heading).endswith("(published)"), 15, "heading stale")
        stored = "document.querySelector('.field-rows_stored .readonly').textContent"
        wait_until(lambda: page.evaluate(stored) == "3", 15, "stored count stale")
        assert page.evaluate(status_field) == "Published"
        crumbs = "document.querySelector('.breadcrumbs').textContent.trim()"
        assert page.evaluate(crumbs).endswith("(published)")
        assert "(published)" in page.evaluate("document.title")
        assert page.evaluate(state) == "running"  # the same page, updated in place

        # The second batch is stored and the run completes.
        IngestBatch.objects.create(run=run, number=2, status="stored", rows=3, stored=3)
        IngestRun.objects.filter(id=run.id).update(
            status=IngestRun.Status.COMPLETED, rows_stored=6, rows_rejected=2
        )

        wait_until(lambda: page.evaluate(state) == "finished", 15, "run page did not finish")
        assert page.evaluate(heading).endswith("(completed)"), page.evaluate(heading)
        assert page.evaluate(status_field) == "Completed"
        for name, value in (("rows_published", "8"), ("rows_stored", "6"), ("rows_rejected", "2")):
            shown = page.evaluate(f"document.querySelector('.field-{name} .readonly').textContent")
            assert shown == value, (name, shown)
        assert page.evaluate("document.getElementById('progress-status').textContent") == (
            "completed"
        )
        assert _shown(page, "progress-error") is False and _shown(page, "progress-totals")

        page.navigate(f"{live_web_server}{IMPORT_URL}")
        wait_until(lambda: _loaded(page, IMPORT_URL), 15, "import page did not load")
        assert _shown(page, "size-error") is False
