"""The ASGI scope extensions the stream asks of the server: their names, owned here.

The uvicorn protocol (viswals.http_protocol) offers them under these names; the stream's ASGI
wrapper (users.stream.stalled) uses them. Kept apart from the stream's code so the protocol
imports two strings, not the stream.
"""

# A callable that drops the connection at once, buffered output and all (the stream closes
# clients that stopped reading with it; ASGI has no message for that, and closing politely
# would wait for the buffer to drain, i.e. forever).
ABORT_EXTENSION = "viswals.abort"
# A callable the application calls for a response that never ends by itself (the event
# stream). A graceful shutdown then closes that connection at once, as a client leaving would:
# the application sees `http.disconnect` and ends the stream, and the client reconnects
# elsewhere with Last-Event-ID. Otherwise uvicorn waits the whole graceful timeout for it and
# then cancels it, logging an ERROR for what is a normal stop.
ENDLESS_EXTENSION = "viswals.endless_response"
