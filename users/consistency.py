"""Which database a read that may be a moment stale uses, and read-your-writes.

The rule. A client that wrote and then reads, through any web host, sees its write:

1. After a request by an account changes something (POST, PUT, PATCH or DELETE that
   succeeded), the primary's WAL insert position (`pg_current_wal_insert_lsn()`, taken after
   the service committed, so past the commit record even with synchronous_commit off) is
   stored in Redis for that account
   (users.cache.note_written_lsn), for WRITTEN_LSN_SECONDS.
2. A stale-tolerant read by that account (the user list and search, the admin's changelist,
   the live page's first rows) goes to a replica only if the replica had replayed at least
   that position at its last health check (viswals.db_router.replica_alias); otherwise to
   the primary. Anonymous reads and accounts with nothing remembered take any healthy replica.
   The position is read in the round trip the API's rate limit makes anyway (the count and the
   position in one pipeline, users.api.throttling), so routing a read asks Redis no more often.
3. Everything else reads the primary: services, transactions, ingest, migrations, and the
   cache fill of `GET /users/{id}` (a stale replica must never put a deleted or older user
   back into Redis).

After a Redis failover the new primary may lack positions the old one had (replication is
asynchronous). Each process asks Redis, at most once a second, whether its primary changed
(its replication id, users.cache.written_lsn_floor); the first process that sees the change
stores the PostgreSQL primary's WAL insert position of that moment, and every account's reads
go to a replica only once it has replayed past that floor too: at or past every write committed
before the failover. A write noted in the second before a process looks can be missed.

The position is kept for WRITTEN_LSN_SECONDS (the lag limit plus a margin): by then every
replica still in use has replayed it (a replica further behind is skipped anyway). When Redis
cannot say, the read goes to the primary. With no replica configured none of this runs: the
middleware removes itself and every read uses the primary, as before.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.conf import settings
from django.core.exceptions import MiddlewareNotUsed
from django.db import DatabaseError
from django.utils.decorators import sync_and_async_middleware
from redis.exceptions import RedisError

from users import cache
from viswals.db_router import PRIMARY, primary_wal_lsn, replica_alias, replica_aliases

logger = logging.getLogger(__name__)

_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def written_lsn_seconds() -> float:
    """How long an account's write position is remembered: the lag limit, the health check's
    period and a margin for clocks."""
    return settings.DATABASE_REPLICA_MAX_LAG_SECONDS + 10.0


# Seconds between a process's looks at whether the Redis primary changed.
FLOOR_CHECK_SECONDS = 1.0


class _Floor:
    def __init__(self) -> None:
        self.lsn = 0
        self.checked_at = float("-inf")
        self.lock = threading.Lock()


_floor = _Floor()
os.register_at_fork(after_in_child=lambda: globals().update(_floor=_Floor()))


def written_lsn_floor() -> int:
    """The position every account's reads wait for since the last Redis failover (module
    docstring), looked up at most once per FLOOR_CHECK_SECONDS. Raises RedisError or
    DatabaseError (the primary's position could not be read)."""
    floor = _floor
    if time.monotonic() - floor.checked_at < FLOOR_CHECK_SECONDS:
        return floor.lsn
    with floor.lock:
        if time.monotonic() - floor.checked_at >= FLOOR_CHECK_SECONDS:
            floor.lsn = cache.written_lsn_floor(current_lsn=primary_wal_lsn)
            floor.checked_at = time.monotonic()
    return floor.lsn


def reads_routed() -> bool:
    """Whether stale-tolerant reads may go to a replica (one is configured)."""
    return len(settings.DATABASES) > 1


# read_alias's `written_lsn` when the caller did not read it: ask Redis.
_ASK = object()


def read_alias(*, account_id: int | None = None, written_lsn: int | None | object = _ASK) -> str:
    """The database for a stale-tolerant read by `account_id` (None: anonymous). `written_lsn`
    is the account's write position when the caller already read it from Redis (None: nothing
    remembered); by default it is read here."""
    if not reads_routed():  # no replicas: the primary, without asking Redis
        return PRIMARY
    min_lsn = None
    if account_id is not None:
        try:
            if written_lsn is _ASK:
                written_lsn = cache.written_lsn(account_id)
            min_lsn = max(written_lsn or 0, written_lsn_floor()) or None
        except RedisError:
            logger.warning("cache: Redis unavailable for read-your-writes; reading the primary")
            return PRIMARY
        except DatabaseError:
            logger.warning("read-your-writes: primary position unknown; reading the primary")
            return PRIMARY
    return replica_alias(min_lsn=min_lsn)


# The request attribute holding (account id, write position) read for the request already.
_WRITTEN_LSN_READ = "_consistency_written_lsn"


def request_written_lsn_read(request, *, account_id: int, written_lsn: int | None) -> None:
    """Keep the account's write position that another Redis call of this request read with its
    own (the rate limit's, users.ratelimit.account_hit): the request's routed read then asks
    Redis nothing more. Read during the request, it is at or past every write the account had
    been answered for when the request arrived, which is all read-your-writes promises."""
    setattr(request, _WRITTEN_LSN_READ, (account_id, written_lsn))


def request_read_alias(request) -> str:
    """read_alias for the account a request is authenticated as."""
    if not reads_routed():
        return PRIMARY
    account_id = request_account_id(request)
    read = getattr(request, _WRITTEN_LSN_READ, None)
    if account_id is not None and read is not None and read[0] == account_id:
        return read_alias(account_id=account_id, written_lsn=read[1])
    return read_alias(account_id=account_id)


def request_account_id(request) -> int | None:
    """The id of the account a request (Django's or DRF's) is authenticated as, else None."""
    # A token's principal (request.auth, which DRF also sets on Django's request) names the
    # account: asking request.user would load the account row from the primary on every read.
    account_id = getattr(getattr(request, "auth", None), "account_id", None)
    if account_id is not None:
        return account_id
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    return user.pk


def note_write(*, account_id: int) -> None:
    """Remember where the primary's WAL is now for `account_id` (its write has committed)."""
    try:
        lsn = primary_wal_lsn()
    except DatabaseError:
        logger.warning("read-your-writes: primary position unknown after a write")
        return
    cache.note_written_lsn(account_id, lsn, ttl=written_lsn_seconds())


def _note_request_write(request, response) -> None:
    if response.status_code < 400 and (account_id := request_account_id(request)) is not None:
        note_write(account_id=account_id)


@sync_and_async_middleware
def read_your_writes_middleware(get_response):
    """After a successful write by an account, note the primary's position (rule 1 above).
    Not installed when no replica is configured."""
    if not replica_aliases():
        raise MiddlewareNotUsed
    if iscoroutinefunction(get_response):

        async def middleware(request):
            response = await get_response(request)
            if request.method in _WRITES:
                await sync_to_async(_note_request_write)(request, response)
            return response

    else:

        def middleware(request):
            response = get_response(request)
            if request.method in _WRITES:
                _note_request_write(request, response)
            return response

    return middleware
