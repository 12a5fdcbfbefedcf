"""The users Server-Sent Events stream (`GET /users/sse`, and the live page `GET /users/live`).

Events are appended to a history in Redis by users.events, from services, after commit; every
web process reads them from there (no pub/sub). A user.deleted that could not be appended
(Redis unreachable) is noted in PostgreSQL and appended later
(users.services.stream_redactions_apply).

Modules, in the order an event travels:

- `history`: the resumable history (`RedisStreamStorage`): a capped Redis stream per channel
  with consecutive ids, and the deleted users' tombstones beside it. Its keys are built in
  users.cache, its Redis clients made in users.redis, its Lua scripts in users/lua/stream_*.lua.
- `redaction`: deleted users taken out of older events; the per-process cache of big replayed
  events once redacted and encoded (`replay_body`).
- `encoding`: the `Event` type and the SSE text of events and of the stream's own notices;
  big live events encoded once per process.
- `delivery`: one reader task per channel and process follows the history and the
  principal-change notices and fills the open streams' queues (`HistoryListenerManager`).
- `slots`: at most SSE_MAX_STREAMS_PER_CLIENT open streams per client, counted in Redis.
- `replay`: bounded catch-ups from the history (Last-Event-ID, or a stream fallen behind).
- `clients`: who a stream serves, checked again while it runs (revocation) and charged for
  its replays.
- `streaming`: one client's stream loop (`client_stream_body`, the body of its response).
- `views`, `urls`: `GET /users/sse` and the live page; refusals before a stream starts.
- `stalled`: the ASGI wrapper that aborts a stream whose client stopped reading.
- `extensions`: the names of the ASGI scope extensions the stream asks of the server
  (viswals.http_protocol offers them).

This package imports nothing itself: import the module you need.
"""
