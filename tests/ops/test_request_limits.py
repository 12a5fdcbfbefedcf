"""Size and time limits against a real uvicorn server, over raw sockets: a body over
API_MAX_BODY_BYTES is refused with 413 before it is sent, a chunked one as soon as it passes the
limit, and a request head over 16 KiB gets 431 — never a 200. A head not complete in
REQUEST_HEAD_TIMEOUT, or a body stalled for REQUEST_BODY_IDLE_TIMEOUT, gets 408 and the
connection closed; past WEB_LIMIT_CONCURRENCY connections a worker answers 503."""

from __future__ import annotations

import json
import re
import socket
import time
from importlib.metadata import version

import httpx
import pytest

from tests.support.environment import ROOT
from tests.support.servers import WebServer
from tests.support.waits import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

LIMIT = 64 * 1024
HEAD_TIMEOUT = 2
BODY_IDLE_TIMEOUT = 2


@pytest.fixture(scope="module")
def server(django_db_setup, tmp_path_factory):
    with WebServer(
        tmp_path_factory.mktemp("limits") / "web.log",
        workers=1,
        API_MAX_BODY_BYTES=str(LIMIT),
        REQUEST_HEAD_TIMEOUT=str(HEAD_TIMEOUT),
        REQUEST_BODY_IDLE_TIMEOUT=str(BODY_IDLE_TIMEOUT),
    ) as server:
        yield server


def exchange(server, head: bytes, body_chunks=(), pause: float = 0.0) -> tuple[int, dict, bytes]:
    """Send a request over a raw socket; return the status, headers and body of the answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head)
        try:
            for chunk in body_chunks:
                sock.sendall(chunk)
                if pause:
                    time.sleep(pause)  # a deliberately slow sender
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the body was all sent: what we want
        data = read_response(sock)
    status_line, _, rest = data.partition(b"\r\n")
    raw_headers, _, body = rest.partition(b"\r\n\r\n")
    headers = dict(
        line.decode().lower().split(": ", 1) for line in raw_headers.split(b"\r\n") if line
    )
    return int(status_line.split()[1]), headers, body


def read_response(sock: socket.socket) -> bytes:
    """One response: its head, and its body as long as Content-Length says."""
    data = b""
    while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + _length(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n")[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def post_head(server, *extra: bytes) -> bytes:
    return b"\r\n".join(
        [b"POST /users HTTP/1.1", f"Host: 127.0.0.1:{server.port}".encode(),
         b"Content-Type: application/json", *extra, b"", b""]
    )  # fmt: skip


def test_body_over_the_limit_is_413_before_it_is_read(server):
    started = time.monotonic()
    # Announce a gigabyte, send none of it: the answer comes from the headers alone.
    status, headers, body = exchange(server, post_head(server, b"Content-Length: 1000000000"))
    assert status == 413
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"detail": f"Request body too large: at most {LIMIT} bytes."}
    assert time.monotonic() - started < 5


def test_chunked_body_is_refused_once_it_passes_the_limit(server):
    chunk = b"a" * 16384
    framed = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    status, _, body = exchange(
        server, post_head(server, b"Transfer-Encoding: chunked"), [framed] * 64 + [b"0\r\n\r\n"]
    )
    assert status == 413
    assert "too large" in json.loads(body)["detail"]


def test_body_within_the_limit_reaches_the_api(server):
    payload = b'{"first_name": "Ada"}'
    status, _, body = exchange(
        server, post_head(server, f"Content-Length: {len(payload)}".encode()) + payload
    )
    assert status == 401  # anonymous: refused by the API, not by the size limit


def test_request_head_over_16_kib_is_431(server):
    head = (
        f"GET /users/1 HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n".encode()
        + b"X-Big: " + b"x" * 20_000 + b"\r\n\r\n"
    )  # fmt: skip
    status, headers, body = exchange(server, head)
    assert status == 431
    assert "too large" in json.loads(body)["detail"]


def test_huge_header_is_refused_while_it_streams_in(server):
    """30 MB in one header: refused after the first few KiB, not read whole into memory."""
    head = f"GET /users/1 HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nX-Big: ".encode()
    status, _, _ = exchange(server, head, [b"x" * 65536] * 480)
    assert status == 431


def test_many_small_headers_over_16_kib_are_431(server):
    lines = b"".join(b"X-H%d: %s\r\n" % (n, b"v" * 100) for n in range(200))
    head = f"GET /users/1 HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n".encode() + lines + b"\r\n"
    assert exchange(server, head)[0] == 431


def test_the_head_limit_relies_on_the_pinned_uvicorn():
    # viswals/http_protocol.py overrides uvicorn's httptools protocol: check it again when the
    # pin moves (requirements.txt), then update WRITTEN_FOR_UVICORN.
    from viswals.http_protocol import WRITTEN_FOR_UVICORN

    requirements = (ROOT / "requirements.txt").read_text()
    pin = re.search(r"^uvicorn(?:\[[a-z,]+\])?==(\S+)", requirements, re.M)
    assert pin is not None and pin[1] == WRITTEN_FOR_UVICORN
    assert version("uvicorn") == WRITTEN_FOR_UVICORN
    assert version("httptools")  # the protocol it subclasses


def read_until_closed(sock: socket.socket, *, trickle: bytes = b"", every: float = 0.0) -> bytes:
    """What the server sends until it closes the connection (at most HEAD_TIMEOUT + 10 s);
    with `trickle`, one byte of it every `every` seconds meanwhile (a slowloris client)."""
    data = b""
    deadline = time.monotonic() + HEAD_TIMEOUT + 10
    while time.monotonic() < deadline:
        if trickle:
            try:
                sock.sendall(trickle[:1])
            except (BrokenPipeError, ConnectionResetError):
                trickle = b""
            trickle = trickle[1:]
        sock.settimeout(every if trickle else max(deadline - time.monotonic(), 0.01))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    return data


def open_socket(server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=HEAD_TIMEOUT + 10)
    return sock


def test_a_request_head_that_never_ends_is_408_and_closed(server):
    with open_socket(server) as sock:
        started = time.monotonic()
        sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n".encode())
        answer = read_until_closed(sock)
    assert HEAD_TIMEOUT - 0.5 < time.monotonic() - started < HEAD_TIMEOUT + 3
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    body = answer.partition(b"\r\n\r\n")[2]
    assert json.loads(body) == {"detail": f"No complete request head within {HEAD_TIMEOUT} s."}


def test_a_head_sent_a_byte_at_a_time_is_cut_off_at_the_head_timeout(server):
    head = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nX-Slow: ".encode()
    with open_socket(server) as sock:
        started = time.monotonic()
        # A byte every 0.3 s, each well within any per-read timeout: the head as a whole is late.
        answer = read_until_closed(sock, trickle=head + b"x" * 1000, every=0.3)
    assert time.monotonic() - started < HEAD_TIMEOUT + 3
    assert answer.startswith(b"HTTP/1.1 408 ")


def test_a_connection_that_sends_nothing_is_closed(server):
    with open_socket(server) as sock:
        started = time.monotonic()
        answer = read_until_closed(sock)
    assert time.monotonic() - started < HEAD_TIMEOUT + 3
    assert answer.startswith(b"HTTP/1.1 408 ")


def test_a_stalled_body_is_408_and_closed(server):
    with open_socket(server) as sock:
        sock.sendall(post_head(server, b"Content-Length: 100") + b'{"first_name": ')
        started = time.monotonic()
        answer = read_until_closed(sock)
    assert BODY_IDLE_TIMEOUT - 0.5 < time.monotonic() - started < BODY_IDLE_TIMEOUT + 3
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"stalled" in answer


def test_a_body_that_keeps_coming_and_keep_alive_between_requests_are_not_cut_off(server):
    payload = b'{"first_name": "Ada"}'
    with open_socket(server) as sock:
        sock.sendall(post_head(server, f"Content-Length: {len(payload)}".encode()))
        for byte in payload:  # slower in all than the idle timeout, never idle that long
            time.sleep(BODY_IDLE_TIMEOUT * 1.5 / len(payload))  # paced: slow, never idle long
            sock.sendall(bytes([byte]))
        first = read_response(sock)
        assert first.startswith(b"HTTP/1.1 401 ")  # anonymous: the API's answer, not a 408
        time.sleep(HEAD_TIMEOUT + 1)  # idle between requests: uvicorn's keep-alive (5 s) rules
        sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")


def test_connections_past_the_limit_get_503(web_server):
    server = web_server(workers=1, WEB_LIMIT_CONCURRENCY="4")
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(4)]
    try:
        response = httpx.get(f"{server.base}/healthz", timeout=5)
        assert response.status_code == 503
    finally:
        for sock in idle:
            sock.close()
    wait_until(lambda: httpx.get(f"{server.base}/healthz", timeout=5).status_code == 200)


# --- The admin's CSV import: large bodies only from sessions allowed to import -----------------

IMPORT_LIMIT = 10 << 20
CSRF = "a" * 32  # a CSRF secret, sent as cookie and form field alike


@pytest.fixture(scope="module")
def import_server(django_db_setup, tmp_path_factory):
    with WebServer(
        tmp_path_factory.mktemp("imports") / "web.log",
        workers=1,
        ADMIN_MAX_BODY_BYTES=str(LIMIT),
        API_MAX_BODY_BYTES=str(LIMIT),
        ADMIN_IMPORT_MAX_BYTES=str(IMPORT_LIMIT),
        ADMIN_IMPORT_MAX_UPLOADS="1",
        REQUEST_BODY_IDLE_TIMEOUT="5",
    ) as server:
        yield server


def import_head(server, length: int, session: tuple | None, *extra: bytes) -> bytes:
    cookie = f"csrftoken={CSRF}" + (f"; {session[0]}={session[1]}" if session else "")
    return b"\r\n".join(
        [b"POST /admin/ingest/ingestrun/import/ HTTP/1.1",
         f"Host: 127.0.0.1:{server.port}".encode(),
         b"Content-Type: multipart/form-data; boundary=BOUNDARY",
         f"Content-Length: {length}".encode(), f"Cookie: {cookie}".encode(), *extra, b"", b""]
    )  # fmt: skip


def import_body(content: bytes) -> bytes:
    return (
        b'--BOUNDARY\r\nContent-Disposition: form-data; name="csrfmiddlewaretoken"\r\n\r\n'
        + CSRF.encode()
        + b'\r\n--BOUNDARY\r\nContent-Disposition: form-data; name="file"; '
        b'filename="people.csv"\r\nContent-Type: text/csv\r\n\r\n'
        + content
        + b"\r\n--BOUNDARY--\r\n"
    )


def first_answer_line(server, session: tuple) -> bytes:
    """The first line the server sends to an import upload that announces 5 MiB with `Expect:
    100-continue` and sends none of it: `100 Continue` once the body is being read."""
    head = import_head(server, 5 << 20, session, b"Expect: 100-continue")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head)
        return sock.recv(65536).split(b"\r\n")[0]


def test_only_a_session_allowed_to_import_may_send_a_large_body(import_server, login_account):
    for session in (
        None,  # anonymous
        login_account(None, staff=True)[2],  # staff without the permission
        login_account("writer")[2],  # the permission, not staff
        ("sessionid", "not-a-session-key"),
    ):
        # 5 MiB announced, none sent: refused from the head alone, as any body over the limit.
        status, _, body = exchange(import_server, import_head(import_server, 5 << 20, session))
        assert status == 413, session
        assert json.loads(body) == {"detail": f"Request body too large: at most {LIMIT} bytes."}

    # Staff allowed to import: the page reads the whole file (and refuses its header).
    body = import_body(b"not,the,header\n" + b"1,2,3\n" * 40_000)  # 240 KiB, over LIMIT
    session = login_account("writer", staff=True)[2]
    status, _, page = exchange(import_server, import_head(import_server, len(body), session) + body)
    assert status == 400
    assert b"missing required column(s)" in page


def test_large_bodies_past_the_per_process_cap_get_503_with_retry_after(
    import_server, login_account
):
    session = login_account("writer", staff=True)[2]
    head = import_head(import_server, 5 << 20, session, b"Expect: 100-continue")
    with socket.create_connection(("127.0.0.1", import_server.port), timeout=10) as first:
        first.sendall(head)
        # 100 Continue: its body is being read, in the one slot this process has.
        assert first.recv(65536).startswith(b"HTTP/1.1 100 Continue")
        status, headers, body = exchange(
            import_server, import_head(import_server, 5 << 20, session)
        )
        assert status == 503
        assert headers["retry-after"] == "10"
        assert "Too many imports" in json.loads(body)["detail"]
    # The first one gone, its slot is free again.
    wait_until(lambda: first_answer_line(import_server, session) == b"HTTP/1.1 100 Continue")
