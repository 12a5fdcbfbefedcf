"""Cache writes of an ingest batch: CPU of Redis and of the client per user, by write path.

Writes N generated users (a ~200-byte JSON each) in batches through users.cache, into keys
under a prefix of this run's own that is deleted at the end:
  - `new=True`: the path for a batch of users just inserted (pipelined `SET NX PX`, then the
    version check for the keys that were there);
  - `new=False`: the version-checking Lua script for every user (updates);
  - for reference, redis-py's own pipeline of the same `SET NX PX` commands.
Each path starts from absent keys. It prints µs per user of Redis' CPU (INFO cpu) and of this
process's CPU, and each as a ratio to the version-check script's.

Usage: DJANGO_SECRET_KEY=... python bench/bench_cache_write.py [--users 500000] [--batch 10000]
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "viswals.settings")
os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
os.environ.setdefault("EMAIL_ENCRYPTION_KEYS", f"bench:{secrets.token_urlsafe(32)}")
os.environ.setdefault("EMAIL_BLIND_INDEX_KEY", secrets.token_urlsafe(32))
os.environ["USERS_CACHE_PREFIX"] = f"benchcache{os.getpid()}:users"

import django  # noqa: E402

django.setup()

from users import cache  # noqa: E402

PAYLOAD = (
    b'{"id":%d,"first_name":"Jonathan","last_name":"Smithsonian","email_address":'
    b'"jonathan.smithsonian%d@example.com","created_at":"2021-03-04T05:06:07.123000Z",'
    b'"deleted_at":null,"merged_at":null,"parent_user_id":null}'
)


def redis_cpu(client) -> float:
    info = client.info("cpu")
    return info["used_cpu_user"] + info["used_cpu_sys"]


def forget_all(client) -> None:
    keys = list(client.scan_iter(f"{cache.user_key('')}*", count=10_000))
    for start in range(0, len(keys), 10_000):
        client.delete(*keys[start : start + 10_000])


def redis_py_pipeline(batch) -> None:
    pipe = cache.redis_client().pipeline(transaction=False)
    for user_id, version, payload in batch:
        pipe.set(cache.user_key(user_id), cache.encode_entry(version, payload),
                 px=cache._ttl_ms(), nx=True)  # fmt: skip
    pipe.execute()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=500_000)
    parser.add_argument("--batch", type=int, default=10_000)
    args = parser.parse_args()
    client = cache.redis_client()
    users = [(n, 10**9 + n, PAYLOAD % (n, n)) for n in range(1, args.users + 1)]
    paths = {
        "new=True: pipelined SET NX PX": lambda batch: cache.cache_users_if_newer(batch, new=True),
        "new=False: version-check script": lambda batch: cache.cache_users_if_newer(batch),
        "redis-py pipeline, SET NX PX": redis_py_pipeline,
    }
    results = {}
    try:
        for name, write in paths.items():
            forget_all(client)
            before_redis, before_cpu = redis_cpu(client), time.process_time()
            for start in range(0, len(users), args.batch):
                write(users[start : start + args.batch])
            per_user = 1e6 / len(users)
            results[name] = (
                (redis_cpu(client) - before_redis) * per_user,
                (time.process_time() - before_cpu) * per_user,
            )
    finally:
        forget_all(client)
    base_redis, base_client = results["new=False: version-check script"]
    print(f"{args.users:,} users into absent keys, {args.batch:,} per batch; CPU per user:")
    for name, (redis_us, client_us) in results.items():
        print(
            f"  {name:34s} Redis {redis_us:4.1f} us ({redis_us / base_redis:.2f}x the script's),"
            f" client {client_us:4.1f} us ({client_us / base_client:.2f}x)"
        )


if __name__ == "__main__":
    main()
