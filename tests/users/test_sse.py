"""GET /users/sse against a real uvicorn server process (two workers, as in the Procfile), read by
a real HTTP client, with events sent from this process and from a real Celery worker."""

from __future__ import annotations

import json
import queue
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from types import SimpleNamespace

import httpx
import pytest
from django.conf import settings
from django.core.management import call_command

from tests.support.data import HEADER
from tests.support.restarts import restart_redis
from tests.support.servers import WebServer
from tests.support.sse import SSEClient, SSEEvent, bytes_until_closed, stalled_stream
from tests.support.waits import wait_until
from users.cache import history_keys
from users.events import user_created, users_ingested
from users.services import user_create, user_delete
from users.stream.encoding import event_id_text
from users.stream.history import EventDoesNotExist, RedisStreamStorage
from users.stream.views import INVALID_LAST_EVENT_ID

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def sse_server(django_db_setup, tmp_path_factory):
    log = tmp_path_factory.mktemp("web") / "web.log"
    with WebServer(log, graceful_timeout=5) as server:
        yield server.base


@pytest.fixture
def reader_headers(api_token) -> dict[str, str]:
    return {"Authorization": f"Token {api_token('reader')}"}


@pytest.fixture
def connect(sse_server, reader_headers) -> Iterator[Callable[..., SSEClient]]:
    """Open streams as a reader (or with the `headers` given)."""
    clients: list[SSEClient] = []

    def open_client(
        last_event_id: str | None = None, headers: dict[str, str] | None = None, base=None
    ) -> SSEClient:
        client = SSEClient(
            f"{base or sse_server}/users/sse",
            last_event_id=last_event_id,
            headers=reader_headers if headers is None else headers,
        )
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()


def is_user_event(event_type: str, user_id: int) -> Callable[[SSEEvent], bool]:
    return lambda event: event.type == event_type and event.json()["id"] == user_id


def new_user(name: str = "Ann"):
    return user_create(first_name=name, last_name="Lee", email_address=f"{name}@example.com")


def test_created_and_deleted_users_reach_a_connected_client(connect):
    client = connect()
    user = new_user()
    created = client.wait_for(is_user_event("user.created", user.id))
    assert created.json()["email_address"] == "Ann@example.com"
    assert created.json()["first_name"] == "Ann"
    channel_epoch, _, number = created.id.partition(":")
    channel, _, epoch = channel_epoch.partition("@")
    assert channel == settings.STREAM_CHANNEL and epoch and int(number) > 0

    user_delete(user_id=user.id)
    deleted = client.wait_for(is_user_event("user.deleted", user.id))
    assert deleted.json() == {"id": user.id}
    assert int(deleted.id.partition(":")[2]) > int(number)


def test_stream_carries_the_bytes_of_get_user(connect, sse_server, api_token):
    """user.created's data is byte for byte the body of GET /users/{id}, from the fast path
    (cached bytes) and from DRF's renderer (a query string sends the request there)."""
    client = connect()
    user = user_create(
        first_name="Zoë “Q”", last_name="Line\u2028Sep", email_address="zoe@example.com"
    )
    event = client.wait_for(is_user_event("user.created", user.id))
    reader = {"Authorization": f"Token {api_token('reader')}"}
    fast = httpx.get(f"{sse_server}/users/{user.id}", headers=reader)
    drf = httpx.get(f"{sse_server}/users/{user.id}?format=json", headers=reader)
    assert fast.status_code == drf.status_code == 200
    assert event.data.encode() == fast.content == drf.content


def test_two_clients_both_receive(connect):
    # With two server workers the clients may land on different processes.
    clients = [connect() for _ in range(4)]
    user = new_user("Two")
    for client in clients:
        client.wait_for(is_user_event("user.created", user.id))


@pytest.mark.pipeline
def test_user_stored_by_a_worker_reaches_a_client(connect, celery_worker_process, write_csv):
    client = connect()
    path = write_csv(
        f"{HEADER}\n"
        "71001,Wendy,Work,wendy@example.com,1600000000000,-1,-1,-1\n"
        "71002,Walt,Work,walt@example.com,1600000000000,-1,-1,-1\n"
    )
    call_command("publish_csv", path, "--timeout", "60", "--wait")
    event = client.wait_for(lambda event: event.type == "users.ingested", timeout=20)
    batch = event.json()
    assert event.id
    assert batch["count"] == 2
    assert {user["id"] for user in batch["users"]} == {71001, 71002}
    assert batch["users"][0]["email_address"].endswith("@example.com")


def test_last_event_id_replays_what_was_missed(connect):
    client = connect()
    first = new_user("First")
    seen = client.wait_for(is_user_event("user.created", first.id))
    client.close()

    missed = new_user("Missed")  # while disconnected
    user_delete(user_id=first.id)

    resumed = connect(last_event_id=seen.id)
    replayed = [resumed.wait_for(lambda e: e.type.startswith("user."))]
    replayed.append(resumed.wait_for(lambda e: e.type.startswith("user.")))
    assert [(e.type, e.json()["id"]) for e in replayed] == [
        ("user.created", missed.id),
        ("user.deleted", first.id),
    ]
    ids = [int(e.id.partition(":")[2]) for e in replayed]
    assert ids == [int(seen.id.partition(":")[2]) + 1, int(seen.id.partition(":")[2]) + 2]
    # ...and it then goes on live.
    later = new_user("Later")
    resumed.wait_for(is_user_event("user.created", later.id))


def test_client_further_behind_than_the_history_is_told_to_reset(connect, settings):
    settings.STREAM_HISTORY = 3
    client = connect()
    old = client.wait_for(is_user_event("user.created", new_user("Old").id))
    client.close()
    for number in range(5):
        user_created({"id": 900 + number})

    resumed = connect(last_event_id=old.id)
    reset = resumed.wait_for(lambda event: event.type == "stream-reset")
    assert reset.json() == {"channels": [settings.STREAM_CHANNEL]}

    future = connect(last_event_id=f"{settings.STREAM_CHANNEL}:999999999")
    future.wait_for(lambda event: event.type == "stream-reset")


def test_an_id_of_another_epoch_or_of_the_old_format_is_told_to_reset(connect, redis_client):
    """A Redis failover starts a new epoch (the new primary may lack the last events, and its
    ids would go on from an older number with other content): simulated here by taking the
    epoch away, as a primary that never had it would."""
    channel = settings.STREAM_CHANNEL
    client = connect()
    seen = client.wait_for(is_user_event("user.created", new_user("Before").id))
    client.close()
    epoch, number = seen.id.rpartition("@")[2].split(":")
    assert seen.id == f"{channel}@{epoch}:{number}"

    # The id as it was before epochs: its numbering may not be today's.
    connect(last_event_id=f"{channel}:{number}").wait_for(lambda e: e.type == "stream-reset")

    redis_client.delete(history_keys(channel)[5])  # the epoch, as after a failover
    later = new_user("AfterFailover")
    resumed = connect(last_event_id=seen.id)
    reset = resumed.wait_for(lambda event: event.type != "stream-open")
    assert reset.type == "stream-reset"  # not the event numbered after the id in the new epoch
    new_epoch = reset.id.rpartition("@")[2].split(":")[0]
    assert new_epoch != epoch
    assert int(reset.id.rpartition(":")[2]) >= int(number) + 1
    # ...and then it goes on live, in the new epoch.
    again = new_user("Live")
    event = resumed.wait_for(is_user_event("user.created", again.id))
    assert event.id.startswith(f"{channel}@{new_epoch}:")
    assert later.id != again.id


def _kill_history_readers(redis_client) -> None:
    readers = [
        info["id"]
        for info in redis_client.client_list()
        if info["name"] == f"{settings.STREAM_KEY_PREFIX}:reader"
    ]
    assert readers, "the server's history reader is not connected"
    for client_id in readers:
        redis_client.execute_command("CLIENT", "KILL", "ID", client_id)


def test_stream_survives_losing_its_redis_connection(connect, redis_client):
    client = connect()
    before = new_user("Before")
    client.wait_for(is_user_event("user.created", before.id))
    _kill_history_readers(redis_client)
    # Sent while the reader is away: read once it is back, from where it was.
    user = new_user("Outage")
    after = new_user("After")
    events = _collect_until(client, is_user_event("user.created", after.id), timeout=15)
    created = [e.json()["id"] for e in events if e.type == "user.created"]
    assert created == [user.id, after.id]  # nothing lost, nothing twice (Before is not resent)
    ids = [int(e.id.partition(":")[2]) for e in events]
    assert ids == sorted(set(ids))


def test_a_lost_history_resets_open_streams(web_server, reader_headers, redis_client, settings):
    """Redis flushed (or restarted without its data): the ids start again, and open streams
    are told stream-reset, then go on live."""
    settings.STREAM_CHANNEL = f"{settings.STREAM_CHANNEL}-lost"
    server = web_server(workers=1, STREAM_CHANNEL=settings.STREAM_CHANNEL)
    client = SSEClient(f"{server.base}/users/sse", headers=reader_headers)
    try:
        for number in range(3):
            user_created({"id": 960 + number})
            seen = client.wait_for(is_user_event("user.created", 960 + number))
        redis_client.delete(*history_keys(settings.STREAM_CHANNEL))
        user_created({"id": 970})  # id 1 again, of a new epoch: the ids before are not its
        _kill_history_readers(redis_client)
        reset = client.wait_for(lambda event: event.type == "stream-reset", timeout=15)
        epoch = RedisStreamStorage().get_position(settings.STREAM_CHANNEL)[0]
        assert reset.id == f"{settings.STREAM_CHANNEL}@{epoch}:1"
        assert not seen.id.startswith(f"{settings.STREAM_CHANNEL}@{epoch}:")
        user_created({"id": 971})
        assert client.wait_for(is_user_event("user.created", 971)).id.endswith(":2")
    finally:
        client.close()
        redis_client.delete(*history_keys(settings.STREAM_CHANNEL))


@pytest.mark.restarts_services
def test_stream_survives_a_redis_restart(connect):
    client = connect()
    before = new_user("BeforeRestart")
    client.wait_for(is_user_event("user.created", before.id))
    restart_redis()
    after = new_user("AfterRestart")
    events = _collect_until(client, is_user_event("user.created", after.id), timeout=20)
    assert [e.type for e in events] == ["user.created"]  # nothing resent, no reset


def test_reading_the_history_uses_no_database(django_assert_num_queries, redis_client):
    user_created({"id": 1})
    storage = RedisStreamStorage()
    channel = settings.STREAM_CHANNEL
    with django_assert_num_queries(0):
        current = storage.get_current_id(channel)
        assert storage.get_events(channel, current - 1)[0].type == "user.created"
    # The history is where its keys say, under this environment's prefix.
    id_key, log_key, *_ = history_keys(channel)
    assert int(redis_client.get(id_key)) == current
    assert redis_client.xrevrange(log_key, count=1)[0][0] == f"{current}-0".encode()


def test_shutdown_does_not_hang_on_open_streams(web_server, reader_headers):
    server = web_server(workers=1, graceful_timeout=5)
    client = SSEClient(f"{server.base}/users/sse", headers=reader_headers)
    try:
        took = server.stop()
    finally:
        client.close()
    assert server.process.returncode is not None
    assert took < 9, f"shutdown took {took:.1f}s"


def test_history_is_bounded_by_count_and_by_size(settings):
    storage = RedisStreamStorage()
    channel = f"{settings.STREAM_CHANNEL}-bounds"
    settings.STREAM_HISTORY = 3
    settings.STREAM_HISTORY_MB = 1
    ids = [storage.append_event(channel, "user.updated", "x" * 10).id for _ in range(5)]
    assert [e.id for e in storage.get_events(channel, ids[1])] == ids[2:]
    with pytest.raises(EventDoesNotExist):
        storage.get_events(channel, ids[0])  # trimmed: more than 3 events

    big = [storage.append_event(channel, "users.ingested", "y" * 400_000).id for _ in range(3)]
    assert [e.id for e in storage.get_events(channel, big[0])] == big[1:]  # 800 KB kept
    with pytest.raises(EventDoesNotExist):
        storage.get_events(channel, ids[-1])  # trimmed: over 1 MB
    huge = storage.append_event(channel, "users.ingested", "z" * 2_000_000).id
    assert [e.id for e in storage.get_events(channel, huge - 1)] == [huge]  # newest always kept
    assert storage.get_events(channel, huge) == []


def test_the_reader_delivers_events_of_every_sender_in_order_once(settings):
    """Events appended from several threads (as from several processes) reach a process's
    streams in id order, each once."""
    import asyncio

    from users.stream.delivery import HistoryListenerManager

    channel = f"{settings.STREAM_CHANNEL}-order"
    storage = RedisStreamStorage()
    manager = HistoryListenerManager()
    delivered: list[int] = []
    manager.add_to_queues = lambda channel, event: delivered.append(event.id)

    def send(count: int) -> None:
        for _ in range(count):
            storage.append_event(channel, "user.updated", '{"id": 1}')

    async def listen() -> None:
        listener = type("Listener", (), {"channels": {channel}})()
        manager.add_listener(listener)
        _, start = await manager.delivered_id(channel)  # the reader is connected, from this id
        senders = [threading.Thread(target=send, args=(25,)) for _ in range(4)]
        for sender in senders:
            sender.start()
        for sender in senders:
            await asyncio.to_thread(sender.join)
        await asyncio.to_thread(
            wait_until, lambda: len(delivered) >= 100, 10, "the reader did not deliver them all"
        )
        manager.remove_listener(listener)
        assert delivered == list(range(start + 1, start + 101))

    try:
        asyncio.run(listen())
    finally:
        _redis_client().delete(*history_keys(channel))


def test_a_stream_that_misses_ids_reads_them_from_the_history(monkeypatch):
    """A live event that skips ids (the reader fell behind the history's trimming) sends the
    stream to the history for the ones in between."""
    import asyncio

    from users.stream import delivery
    from users.stream.delivery import Listener
    from users.stream.streaming import client_stream_body

    channel = settings.STREAM_CHANNEL
    manager = delivery.HistoryListenerManager()

    async def no_reader(channel, reader) -> None:  # the test feeds the queue itself
        reader.epoch, reader.last_id = RedisStreamStorage().get_position(channel)
        reader.started.set()

    manager._read_forever = no_reader
    monkeypatch.setattr(delivery, "_manager", manager)
    slot = SimpleNamespace(renew_if_due=lambda: asyncio.sleep(0), arelease=lambda: asyncio.sleep(0))

    async def stream() -> tuple[list[int], int]:
        listener = Listener()
        listener.channels = {channel}
        body = client_stream_body(channel=channel, last_id=None, listener=listener, slot=slot)
        await anext(body)  # stream-open: its position, the newest id, was taken before it
        waiting = asyncio.ensure_future(anext(body))
        for number in range(3):
            await asyncio.to_thread(user_created, {"id": 980 + number})
        current = RedisStreamStorage().get_current_id(channel)
        # Only the last one reaches its queue, as if the first two had been missed.
        manager.add_to_queues(channel, RedisStreamStorage().get_events(channel, current - 1)[0])
        got: list[int] = []
        while len(got) < 3:
            chunk = await asyncio.wait_for(waiting, 5)
            got += [int(m) for m in re.findall(rb"id: [^:\n]+:(\d+)", chunk)]
            waiting = asyncio.ensure_future(anext(body))
        waiting.cancel()
        await body.aclose()
        return got, current

    got, current = asyncio.run(stream())
    assert got == [current - 2, current - 1, current]


# --- Who may stream -----------------------------------------------------------------------


def _sse_get(base: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """A request to the stream that is expected to be refused (the body is not a stream)."""
    return httpx.get(f"{base}/users/sse", headers=headers or {}, timeout=10)


def test_anonymous_stream_is_refused_with_401(sse_server):
    response = _sse_get(sse_server)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Token realm="api"'
    assert response.json() == {"detail": "Authentication credentials were not provided."}


@pytest.mark.parametrize("authorization", ["Token vw_not-a-token", "Token", "Token a b"])
def test_bad_token_on_the_stream_is_401(sse_server, authorization):
    response = _sse_get(sse_server, {"Authorization": authorization})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Token realm="api"'
    assert "token" in response.json()["detail"].lower()


def test_account_without_view_user_gets_403_on_the_stream(sse_server, api_token, login_account):
    by_token = _sse_get(sse_server, {"Authorization": f"Token {api_token(None)}"})
    assert by_token.status_code == 403
    assert by_token.json() == {"detail": "You do not have permission to perform this action."}
    _, _, (cookie, session) = login_account(None)
    assert _sse_get(sse_server, {"Cookie": f"{cookie}={session}"}).status_code == 403


def test_reader_session_streams(connect, login_account):
    _, _, (cookie, session) = login_account("reader")
    client = connect(headers={"Cookie": f"{cookie}={session}"})
    user = new_user("Session")
    client.wait_for(is_user_event("user.created", user.id))


def test_malformed_last_event_id_is_400(sse_server, reader_headers):
    response = _sse_get(sse_server, {**reader_headers, "Last-Event-ID": "nonsense"})
    assert response.status_code == 400
    assert response.json() == {"Last-Event-ID": [INVALID_LAST_EVENT_ID]}


def test_live_page_needs_a_login_with_view_user(sse_server, login_account):
    anonymous = httpx.get(f"{sse_server}/users/live", timeout=10)
    assert anonymous.status_code == 302
    assert anonymous.headers["location"] == "/admin/login/?next=/users/live"
    _, _, (cookie, nobody) = login_account(None)
    refused = httpx.get(f"{sse_server}/users/live", headers={"Cookie": f"{cookie}={nobody}"})
    assert refused.status_code == 403
    _, _, (cookie, reader) = login_account("reader")
    page = httpx.get(f"{sse_server}/users/live", headers={"Cookie": f"{cookie}={reader}"})
    assert page.status_code == 200 and "/users/sse" in page.text


@pytest.fixture(scope="module")
def public_server(django_db_setup, tmp_path_factory):
    """Reads open to anyone, and at most 3 streams per client."""
    log = tmp_path_factory.mktemp("public") / "web.log"
    with WebServer(log, API_READS_REQUIRE_AUTH="false", SSE_MAX_STREAMS_PER_CLIENT="3") as s:
        yield s.base


def test_public_mode_lets_anonymous_clients_stream_within_a_limit_per_address(
    connect, public_server
):
    assert httpx.get(f"{public_server}/users/live", timeout=10).status_code == 200
    clients = [connect(headers={}, base=public_server) for _ in range(3)]
    user = new_user("Public")
    for client in clients:
        client.wait_for(is_user_event("user.created", user.id))
    refused = _sse_get(public_server)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) > 0
    clients[0].close()
    _wait_until_a_stream_opens(public_server, {})


def _wait_until_a_stream_opens(base: str, headers: dict[str, str], within: float = 3) -> None:
    """A closed stream frees its place at once: a new one opens within moments."""

    def opens() -> bool:
        with httpx.stream("GET", f"{base}/users/sse", headers=headers, timeout=10) as response:
            assert response.status_code in (200, 429), response.status_code
            return response.status_code == 200

    wait_until(opens, within, "the closed stream's place was not freed")


def test_an_account_has_at_most_ten_streams_across_processes(
    connect, sse_server, api_token, reader_headers
):
    # Two server processes: the streams spread over both, the count is shared in Redis.
    clients = [connect() for _ in range(10)]
    refused = _sse_get(sse_server, reader_headers)
    assert refused.status_code == 429
    assert refused.json()["detail"] == "Too many open streams: at most 10 per client."
    assert refused.headers["retry-after"] == "10"
    other = connect(headers={"Authorization": f"Token {api_token('reader')}"})
    user = new_user("Limit")
    for client in (*clients, other):
        client.wait_for(is_user_event("user.created", user.id))
    clients[3].close()
    _wait_until_a_stream_opens(sse_server, reader_headers)


def test_stream_places_of_a_dead_process_age_out(redis_client, settings):
    from users.stream.slots import STREAM_SLOT_SECONDS, StreamSlot

    settings.SSE_MAX_STREAMS_PER_CLIENT = 1
    key = f"{settings.STREAM_KEY_PREFIX}:streams:test-age-out"
    stale = StreamSlot(key)
    assert stale.take()
    assert not StreamSlot(key).take()
    # As if its process had died a while ago: the place's expiry has passed.
    redis_client.zadd(key, {stale.stream_id: time.time() - 1})
    assert StreamSlot(key).take()
    assert 0 < redis_client.ttl(key) <= STREAM_SLOT_SECONDS
    redis_client.delete(key)


def test_stream_keys_are_bounded_whatever_the_address():
    from users.cache import streams_key

    key = streams_key(account_id=None, address="x" * 10_000)
    assert len(key) < 100


# --- Replays --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bounded_server(django_db_setup, tmp_path_factory):
    """Replays of at most 5 events or 300 kB."""
    log = tmp_path_factory.mktemp("bounded") / "web.log"
    with WebServer(log, SSE_REPLAY_MAX_EVENTS="5", SSE_REPLAY_MAX_BYTES="300000") as s:
        yield s.base


def _current_id() -> str:
    channel = settings.STREAM_CHANNEL
    return event_id_text(channel, *RedisStreamStorage().get_position(channel))


def test_a_replay_beyond_its_event_or_byte_bound_is_a_reset(connect, bounded_server):
    def resume(after: str) -> list[SSEEvent]:
        client = connect(last_event_id=after, base=bounded_server)
        return client.received(within=1.5)

    start = _current_id()
    for number in range(5):
        user_created({"id": 950 + number})
    assert [e.json()["id"] for e in resume(start)] == [950, 951, 952, 953, 954]
    user_created({"id": 955})
    assert [e.type for e in resume(start)] == ["stream-reset"]

    start = _current_id()
    users_ingested(
        run_id=1, batch=1, users_json=[json.dumps({"id": 1, "pad": "p" * 200_000}).encode()]
    )
    assert [e.type for e in resume(start)] == ["users.ingested"]
    users_ingested(
        run_id=1, batch=2, users_json=[json.dumps({"id": 2, "pad": "p" * 200_000}).encode()]
    )
    assert [e.type for e in resume(start)] == ["stream-reset"]


def test_no_replay_holds_a_deleted_user(connect):
    from users.payloads import to_json, user_payload

    start = _current_id()  # before the user was created
    gone = new_user("Gone")
    kept = new_user("Kept")
    users_ingested(
        run_id=2, batch=1, users_json=[to_json(user_payload(u)).encode() for u in (gone, kept)]
    )
    user_delete(user_id=gone.id)

    client = connect(last_event_id=start)
    events = _collect_until(client, is_user_event("user.deleted", gone.id))
    text = "\n".join(e.data for e in events)
    assert "Gone" not in text and "gone@example.com" not in text.lower()
    assert [e.type for e in events] == ["user.created", "users.ingested", "user.deleted"]
    assert events[0].json()["id"] == kept.id
    batch = events[1].json()
    assert [u["id"] for u in batch["users"]] == [kept.id] and batch["count"] == 1
    assert events[2].json() == {"id": gone.id}


def _collect_until(client: SSEClient, match, timeout: float = 10) -> list[SSEEvent]:
    """Every event up to and including the first that matches."""
    out: list[SSEEvent] = []
    deadline = time.monotonic() + timeout
    while not out or not match(out[-1]):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"expected event did not arrive; got {[e.type for e in out]}"
        with suppress(queue.Empty):
            out.append(client.events.get(timeout=remaining))
    return out


def test_tombstones_leave_with_the_history_and_spare_a_user_created_again(settings):
    storage = RedisStreamStorage()
    channel = f"{settings.STREAM_CHANNEL}-tombstones"
    settings.STREAM_HISTORY = 3
    before = storage.append_event(channel, "user.updated", '{"id": 7, "first_name": "Old"}').id
    storage.append_event(channel, "user.deleted", '{"id": 7}')
    again = storage.append_event(channel, "user.created", '{"id": 7, "first_name": "New"}').id
    events = storage.get_events(channel, before - 1)
    assert [(e.type, e.id) for e in events] == [
        ("user.deleted", before + 1),
        ("user.created", again),
    ]
    deleted_key = history_keys(channel)[4]
    step = storage.read(channel, before - 1, max_events=10, max_bytes=10)  # one event at least
    assert step.events == [] and step.last_read_id == before  # ...and that one was dropped
    step = storage.read(channel, before, max_events=10, max_bytes=10)
    assert [e.type for e in step.events] == ["user.deleted"]
    for number in range(3):
        storage.append_event(channel, "user.updated", f'{{"id": {100 + number}}}')
    assert _redis_client().zcard(deleted_key) == 0  # trimmed with the history


def _redis_client():
    from users.cache import redis_client

    return redis_client()


# --- Clients that stop reading ---------------------------------------------------------------
# What they cost in memory and latency, with 60 sockets and 30 MB each, is measured by
# bench/bench_stalled_streams.py; here, that they are dropped and their places freed.

STALLED_CLIENTS = 3
BIG_EVENTS = 4  # ~1 MB each: far more than the socket buffers hold, so the server's writes block


def test_clients_that_stop_reading_are_dropped_and_free_their_places(
    web_server, api_token, redis_client
):
    from users.cache import streams_key
    from users.selectors import principal_for_token

    server = web_server(
        workers=1,
        SSE_SEND_TIMEOUT="1",
        API_USER_THROTTLE_RATE="",  # replays of 4 MB each: not what this test is about
        SSE_REPLAY_MAX_BYTES=str(2**30),
        LOG_LEVEL="INFO",
    )
    token = api_token("reader")
    start = _current_id()
    for number in range(BIG_EVENTS):
        pad = "x" * 1_000_000
        RedisStreamStorage().append_event(
            settings.STREAM_CHANNEL,
            "users.ingested",
            f'{{"run":9,"batch":{number},"pad":"{pad}"}}',
        )
    sockets = [stalled_stream(server.port, token, start) for _ in range(STALLED_CLIENTS)]
    try:
        # Not read until the server says it gave up on them (reading would unblock them).
        wait_until(
            lambda: (
                server.log().count("closing a stream whose client read nothing") >= STALLED_CLIENTS
            ),
            15,
            "the stalled streams were not dropped",
        )
        for sock in sockets:
            received = bytes_until_closed(sock, limit=BIG_EVENTS * 2**20, timeout=10)
            assert received is not None, "a stalled stream was not closed"
    finally:
        for sock in sockets:
            sock.close()
    account = principal_for_token(token=token).account_id
    key = streams_key(account_id=account, address="")
    wait_until(lambda: redis_client.zcard(key) == 0, 5, "the dropped streams hold their places")


# --- Clients whose rights end while they stream ----------------------------------------------

# The servers here check open streams every API_TOKEN_CACHE_SECONDS (30 s); a change must end
# the stream well before that, through the notice it sends to every web process.
CLOSED_WITHIN = 5


def _account_of(token: str):
    from django.contrib.auth import get_user_model

    from users.selectors import principal_for_token

    return get_user_model().objects.get(pk=principal_for_token(token=token).account_id)


def _account_named(name: str):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(username=name)


def _assert_closed(client: SSEClient, reason: str, within: float = CLOSED_WITHIN) -> None:
    """The stream says why it ends (stream-closed, no id), then ends."""
    closed = client.wait_for(lambda event: event.type == "stream-closed", timeout=within)
    assert closed.json()["reason"] == reason and closed.json()["detail"]
    assert closed.id is None
    assert client.ended(timeout=2), "the stream went on after stream-closed"


def test_a_revoked_token_s_stream_is_closed_within_seconds(connect, api_token):
    token = api_token("reader")
    account = _account_of(token)
    client = connect(headers={"Authorization": f"Token {token}"})
    client.wait_for(is_user_event("user.created", new_user("BeforeRevoke").id))
    call_command("revoke_api_tokens", account.username)
    _assert_closed(client, "not_authenticated")


def test_a_session_s_stream_is_closed_at_logout(connect, login_account):
    from django.contrib.auth import logout
    from django.contrib.sessions.backends.db import SessionStore
    from django.http import HttpRequest

    name, _, (cookie, session_key) = login_account("reader")
    client = connect(headers={"Cookie": f"{cookie}={session_key}"})
    client.wait_for(is_user_event("user.created", new_user("BeforeLogout").id))
    request = HttpRequest()
    request.session, request.user = SessionStore(session_key), _account_named(name)
    logout(request)
    _assert_closed(client, "not_authenticated")


def test_a_deactivated_account_s_stream_is_closed(connect, login_account):
    name, _, (cookie, session_key) = login_account("reader")
    client = connect(headers={"Cookie": f"{cookie}={session_key}"})
    account = _account_named(name)
    account.is_active = False
    account.save()
    _assert_closed(client, "not_authenticated")


def test_a_stream_is_closed_when_its_account_loses_view_user(connect, api_token):
    token = api_token("reader")
    client = connect(headers={"Authorization": f"Token {token}"})
    _account_of(token).groups.clear()
    _assert_closed(client, "permission_denied")


def test_streams_check_their_client_again_without_a_notice(web_server, api_token):
    """A change no notice announced (a token deleted in SQL): the periodic check, every
    API_TOKEN_CACHE_SECONDS, ends the stream."""
    from users.access import token_digest
    from users.models import ApiToken

    server = web_server(workers=1, API_TOKEN_CACHE_SECONDS="2")
    token = api_token("reader")
    client = SSEClient(f"{server.base}/users/sse", headers={"Authorization": f"Token {token}"})
    try:
        tokens = ApiToken.objects.filter(digest=token_digest(token))
        assert tokens._raw_delete(tokens.db) == 1  # no signal, so no notice
        _assert_closed(client, "not_authenticated", within=8)
    finally:
        client.close()


# --- Replays and the rate limit --------------------------------------------------------------


def test_stream_connects_and_replays_count_against_the_rate_limit(web_server, api_token):
    """A connect is one request of the client's API window, a replay one per
    SSE_REPLAY_BYTES_PER_REQUEST bytes; over the limit, a JSON 429 with Retry-After."""
    server = web_server(
        workers=1, API_USER_THROTTLE_RATE="30/minute", SSE_REPLAY_BYTES_PER_REQUEST="1000"
    )
    headers = {"Authorization": f"Token {api_token('reader')}"}
    start = _current_id()
    for number in range(10):
        user_created({"id": 940 + number, "pad": "p" * 5000})  # 50 kB: 50 requests' worth
    SSEClient(f"{server.base}/users/sse", headers=headers).close()  # a connect alone passes
    refused = _sse_get(server.base, {**headers, "Last-Event-ID": start})
    assert refused.status_code == 429
    assert refused.json()["detail"].startswith("Request was throttled. Expected available in")
    assert int(refused.headers["retry-after"]) > 0
    # The API's own window: the client's reads are throttled too.
    assert httpx.get(f"{server.base}/users/1", headers=headers).status_code == 429


def test_replays_redact_and_encode_a_batch_once_per_delete(monkeypatch, settings):
    """Clients resuming from the same place share one redacted copy of a big batch event; a
    later delete makes a new one."""
    from users.stream import redaction

    channel = f"{settings.STREAM_CHANNEL}-replayed"
    storage = RedisStreamStorage()
    users = [{"id": n, "email_address": f"u{n}@example.com"} for n in range(1, 201)]
    batch = json.dumps({"run": 1, "batch": 1, "count": 200, "users": users}, separators=(",", ":"))
    start = storage.append_event(channel, "user.updated", '{"id": 0}').id
    batch_id = storage.append_event(channel, "users.ingested", batch).id
    storage.append_event(channel, "user.deleted", '{"id": 5}')
    parsed: list[int] = []
    redact = redaction.without_deleted_users

    def counted(event, deleted):
        if event.type == "users.ingested":
            parsed.append(event.id)
        return redact(event, deleted)

    monkeypatch.setattr(redaction, "without_deleted_users", counted)

    def replay() -> bytes:
        step = storage.read(channel, start, max_events=10, max_bytes=2**20, encoded=True)
        return b"".join(event.body for event in step.events)

    try:
        first = replay()
        assert b'"u5@example.com"' not in first and b'"u6@example.com"' in first
        assert replay() == first
        assert parsed == [batch_id]  # the second replay did not parse it again
        storage.append_event(channel, "user.deleted", '{"id": 6}')
        third = replay()
        assert b'"u6@example.com"' not in third and b'"u7@example.com"' in third
        assert parsed == [batch_id, batch_id]
    finally:
        _redis_client().delete(*history_keys(channel))


# --- Deletes while the stream's Redis is unreachable -----------------------------------------


def _unreachable_redis(settings) -> dict:
    """Point this process's stream client at a closed port (the shared Redis is not touched);
    returns the settings to restore."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    reachable = settings.STREAM_REDIS
    # Refused at once, without redis-py's retries (~3.7 s a call): what is tested is what the
    # services do once the write has failed.
    settings.STREAM_REDIS = {
        **reachable,
        "port": closed_port,
        "socket_connect_timeout": 1,
        "retry": Retry(NoBackoff(), 0),
    }
    return reachable


def _history_text(after: int) -> str:
    channel = settings.STREAM_CHANNEL
    return "\n".join(e.data for e in RedisStreamStorage().get_events(channel, after, limit=1000))


def test_a_delete_the_history_missed_is_redacted_once_redis_answers(settings):
    from users.models import PendingStreamRedaction

    start = int(_current_id().rpartition(":")[2])
    user = new_user("Missed")
    reachable = _unreachable_redis(settings)
    user_delete(user_id=user.id)
    settings.STREAM_REDIS = reachable
    assert PendingStreamRedaction.objects.filter(user_id=user.id).exists()
    assert "Missed@example.com" in _history_text(start)  # a resume would still send it

    call_command("repair_cache")
    assert "Missed@example.com" not in _history_text(start)
    assert not PendingStreamRedaction.objects.exists()


def test_the_next_delete_that_reaches_the_history_sends_the_missed_ones(settings):
    from users.models import PendingStreamRedaction

    start = int(_current_id().rpartition(":")[2])
    missed, later = new_user("MissedToo"), new_user("Later")
    reachable = _unreachable_redis(settings)
    user_delete(user_id=missed.id)
    settings.STREAM_REDIS = reachable
    user_delete(user_id=later.id)
    text = _history_text(start)
    assert "MissedToo@example.com" not in text and "Later@example.com" not in text
    assert not PendingStreamRedaction.objects.exists()


def test_a_user_created_again_since_the_missed_delete_is_replayed_as_it_is_now(settings):
    from users.models import User

    start = int(_current_id().rpartition(":")[2])
    first = new_user("FirstLife")
    reachable = _unreachable_redis(settings)
    user_delete(user_id=first.id)
    settings.STREAM_REDIS = reachable
    again = User.objects.create(
        id=first.id, first_name="Second", last_name="Life", email_address="second@example.com",
        created_at=first.created_at,
    )  # fmt: skip
    user_created({"id": again.id, "email_address": again.email_address})

    call_command("repair_cache")
    channel = settings.STREAM_CHANNEL
    events = RedisStreamStorage().get_events(channel, start, limit=1000)
    decoded = [(e.type, json.loads(e.data)) for e in events]
    mine = [(kind, data) for kind, data in decoded if data.get("id") == first.id]
    assert "FirstLife@example.com" not in json.dumps(mine)
    assert [kind for kind, _ in mine] == ["user.deleted", "user.updated"]
    assert mine[-1][1]["email_address"] == "second@example.com"
