"""GET /users/sse against a real uvicorn server process (two workers, as in the Procfile), read by
a real HTTP client, with events sent from this process and from a real Celery worker."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
from django.conf import settings
from django.core.management import call_command
from django_eventstream.storage import EventDoesNotExist

from tests.processes import WebServer
from users.events import user_created
from users.services import user_create, user_delete
from users.sse import RedisStreamStorage, history_keys

pytestmark = pytest.mark.django_db(transaction=True)

HEADER = "id,first_name,last_name,email_address,created_at,deleted_at,merged_at,parent_user_id"


@pytest.fixture(scope="module")
def sse_server(django_db_setup, tmp_path_factory):
    server = WebServer(tmp_path_factory.mktemp("web") / "web.log", graceful_timeout=5)
    yield server.base
    server.stop()


@dataclass
class SSEEvent:
    type: str
    id: str | None
    data: str

    def json(self):
        return json.loads(self.data)


class SSEClient:
    """Reads an event stream in a thread; events land in a queue."""

    def __init__(self, url: str, last_event_id: str | None = None) -> None:
        self.events: queue.Queue[SSEEvent] = queue.Queue()
        headers = {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        self._client = httpx.Client(timeout=httpx.Timeout(5, read=None))
        self._response = self._client.send(
            self._client.build_request("GET", url, headers=headers), stream=True
        )
        assert self._response.status_code == 200
        assert self._response.headers["content-type"].startswith("text/event-stream")
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        self.wait_for(lambda event: event.type == "stream-open")

    def _read(self) -> None:
        fields: dict[str, list[str]] = {}
        try:
            for line in self._response.iter_lines():
                if line == "":
                    if "event" in fields or "data" in fields:
                        self.events.put(
                            SSEEvent(
                                type=fields.get("event", ["message"])[-1],
                                id=fields.get("id", [None])[-1],
                                data="\n".join(fields.get("data", [])),
                            )
                        )
                    fields = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(":")
                    fields.setdefault(name, []).append(value.removeprefix(" "))
        except Exception:
            pass  # closed

    def wait_for(self, match: Callable[[SSEEvent], bool], timeout: float = 10) -> SSEEvent:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "expected event did not arrive"
            try:
                event = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            if match(event):
                return event

    def received(self, within: float = 0.5) -> list[SSEEvent]:
        """Every event that arrives within `within` seconds."""
        out = []
        deadline = time.monotonic() + within
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                out.append(self.events.get(timeout=remaining))
            except queue.Empty:
                break
        return out

    def close(self) -> None:
        self._response.close()
        self._client.close()


@pytest.fixture
def connect(sse_server) -> Iterator[Callable[..., SSEClient]]:
    clients: list[SSEClient] = []

    def open_client(last_event_id: str | None = None) -> SSEClient:
        client = SSEClient(f"{sse_server}/users/sse", last_event_id=last_event_id)
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
    channel, _, number = created.id.partition(":")
    assert channel == settings.EVENTSTREAM_USERS_CHANNEL and int(number) > 0

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
    settings.EVENTSTREAM_HISTORY = 3
    client = connect()
    old = client.wait_for(is_user_event("user.created", new_user("Old").id))
    client.close()
    for number in range(5):
        user_created({"id": 900 + number})

    resumed = connect(last_event_id=old.id)
    reset = resumed.wait_for(lambda event: event.type == "stream-reset")
    assert reset.json() == {"channels": [settings.EVENTSTREAM_USERS_CHANNEL]}

    future = connect(last_event_id=f"{settings.EVENTSTREAM_USERS_CHANNEL}:999999999")
    future.wait_for(lambda event: event.type == "stream-reset")


def test_stream_survives_losing_its_redis_connection(connect, redis_client):
    client = connect()
    listeners = [
        info["id"]
        for info in redis_client.client_list()
        if info["name"] == f"{settings.EVENTSTREAM_KEY_PREFIX}:listener"
    ]
    assert listeners, "the server's Redis subscriber is not connected"
    for client_id in listeners:
        redis_client.execute_command("CLIENT", "KILL", "ID", client_id)
    # Sent while the subscriber is away: read back from the history once it is back.
    user = new_user("Outage")
    client.wait_for(is_user_event("user.created", user.id), timeout=15)
    after = new_user("After")
    client.wait_for(is_user_event("user.created", after.id), timeout=15)


def test_reading_the_history_uses_no_database(django_assert_num_queries):
    user_created({"id": 1})
    storage = RedisStreamStorage()
    channel = settings.EVENTSTREAM_USERS_CHANNEL
    with django_assert_num_queries(0):
        current = storage.get_current_id(channel)
        assert storage.get_events(channel, current - 1)[0].type == "user.created"
    prefix = f"{settings.EVENTSTREAM_KEY_PREFIX}:"
    assert all(key.startswith(prefix) for key in history_keys(channel))


def test_shutdown_does_not_hang_on_open_streams(tmp_path):
    server = WebServer(tmp_path / "web.log", workers=1, graceful_timeout=5)
    client = SSEClient(f"{server.base}/users/sse")
    try:
        took = server.stop()
    finally:
        client.close()
    assert server.process.returncode is not None
    assert took < 9, f"shutdown took {took:.1f}s"


def test_history_is_bounded_by_count_and_by_size(settings):
    storage = RedisStreamStorage()
    channel = f"{settings.EVENTSTREAM_USERS_CHANNEL}-bounds"
    settings.EVENTSTREAM_HISTORY = 3
    settings.EVENTSTREAM_HISTORY_MB = 1
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


def _recording_manager():
    from users.sse import SupervisedListenerManager

    manager = SupervisedListenerManager()
    delivered: list[int] = []
    resyncs: list[str] = []
    manager.add_to_queues = lambda channel, event: delivered.append(event.id)
    manager._resync = resyncs.append
    manager.listeners_by_channel = {"c": {object()}}
    manager._last_ids["c"] = 4
    return manager, delivered, resyncs


def _message(event_id: int) -> str:
    return json.dumps({"channel": "c", "event_type": "t", "data": "{}", "pub_id": str(event_id)})


def test_messages_arriving_out_of_order_are_delivered_in_order():
    import asyncio

    manager, delivered, resyncs = _recording_manager()

    async def arrive():
        for event_id in (6, 8, 5, 7, 7, 3):  # gaps, a duplicate and a late one
            manager._dispatch(_message(event_id))
        await asyncio.sleep(0.4)

    asyncio.run(arrive())
    assert delivered == [5, 6, 7, 8]
    assert resyncs == []  # no stream had to re-read the history


def test_a_gap_that_never_fills_sends_streams_to_the_history():
    import asyncio

    from users.sse import REORDER_WAIT

    manager, delivered, resyncs = _recording_manager()

    async def arrive():
        manager._dispatch(_message(6))
        await asyncio.sleep(REORDER_WAIT + 0.2)
        manager._dispatch(_message(7))

    asyncio.run(arrive())
    assert resyncs == ["c"]  # 5 never came: streams read 5 and 6 from the history
    assert delivered == [7]


def test_keep_alives_are_sse_comments():
    import asyncio

    from users.sse import KEEP_ALIVE_COMMENT, LIBRARY_KEEP_ALIVE, keep_alives_as_comments

    async def chunks():
        for chunk in (b"event: user.created\ndata: {}\n\n", LIBRARY_KEEP_ALIVE):
            yield chunk

    async def collect():
        return [chunk async for chunk in keep_alives_as_comments(chunks())]

    assert asyncio.run(collect()) == [b"event: user.created\ndata: {}\n\n", KEEP_ALIVE_COMMENT]
