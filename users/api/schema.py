"""The OpenAPI schema beyond what drf-spectacular reads from the views (a postprocessing hook,
SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"]):

- answers every operation can get from the layers around its view: 400 for a `Host` outside
  DJANGO_ALLOWED_HOSTS (Django), 413 and 431 for bodies and heads over the limits (ahead of
  Django: viswals.request_limits, viswals.http_protocol), 500;
- the constraints of the shared field rules (users.validation) on the `User` body, which the
  serializer leaves to those rules so that the API and the CSV path give the same messages;
- `GET /users/sse`, the event stream (users.stream), a plain Django view drf-spectacular does not
  see.

The error bodies themselves are declared here once and used by the views' `extend_schema`.
"""

from __future__ import annotations

import copy

from drf_spectacular.utils import OpenApiResponse

from users.api.serializers import ErrorSerializer
from users.validation import EMAIL_MAX_LENGTH, NAME_MAX_LENGTH

# The body of a 400: each offending field or query parameter with its messages.
VALIDATION_ERROR_SCHEMA = {
    "type": "object",
    "additionalProperties": {"type": "array", "items": {"type": "string"}},
    "example": {"email_address": ["not a valid email address: 'x'"]},
}
VALIDATION_ERROR = OpenApiResponse(
    response=VALIDATION_ERROR_SCHEMA,
    description="Each offending field or query parameter with its messages (an unknown query "
    "parameter included: it is refused, not ignored); what concerns the request as a whole "
    "(malformed JSON, say) is under `non_field_errors`.",
)
# The 400 of an operation without a body or filters: a query parameter (none is accepted, DRF's
# `format` aside), or a bad Host.
QUERY_ERROR = OpenApiResponse(
    response=VALIDATION_ERROR_SCHEMA,
    description="An unknown query parameter, named with the accepted ones: "
    '`{"<parameter>": ["Unknown query parameter. Accepted: format."]}`; or a `Host` header '
    'the server does not answer to: `{"non_field_errors": ["Bad request."]}`.',
)
ERROR = OpenApiResponse(ErrorSerializer, description='`{"detail": "..."}`')
# A read that PostgreSQL cancelled at API_QUERY_TIMEOUT_MS (users.selectors.bounded_read).
QUERY_TIMEOUT_ERROR = OpenApiResponse(
    ErrorSerializer,
    description="The query ran past API_QUERY_TIMEOUT_MS (2 s by default) and was cancelled: "
    '`{"detail": "The query took too long and was cancelled; narrow it with more selective '
    'filters."}`. Retrying the same query will not help; more selective filters will.',
)

_ERROR_REF = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


# Answers from outside the views, added to every operation that does not declare them.
_AROUND_THE_VIEWS = {
    "400": _json(VALIDATION_ERROR_SCHEMA, "A `Host` header the server does not answer to: "
                 '`{"non_field_errors": ["Bad request."]}`.'),
    "413": _json(_ERROR_REF, "A request body over API_MAX_BODY_BYTES (1 MiB), whatever the "
                 "method; refused before it is read."),
    "431": _json(_ERROR_REF, "Request headers over REQUEST_MAX_HEADER_BYTES (16 KiB)."),
    "500": _json(_ERROR_REF, "An unexpected error (logged with the request id)."),
}  # fmt: skip

# --- /users/sse -------------------------------------------------------------------------------

_EVENT_SCHEMAS = {
    "UserDeletedEvent": {
        "type": "object",
        "description": "Data of `user.deleted`.",
        "properties": {"id": {"type": "integer"}},
        "required": ["id"],
    },
    "UsersIngestedEvent": {
        "type": "object",
        "description": "Data of `users.ingested`: one stored ingest batch.",
        "properties": {
            "run": {"type": "integer", "description": "The ingest run's id."},
            "batch": {"type": "integer", "description": "The batch's number in the run."},
            "count": {"type": "integer", "description": "How many users `users` holds."},
            "users": {"type": "array", "items": {"$ref": "#/components/schemas/User"}},
        },
        "required": ["run", "batch", "count", "users"],
    },
    "StreamResetEvent": {
        "type": "object",
        "description": "Data of `stream-reset`: the client missed events it cannot be sent.",
        "properties": {"channels": {"type": "array", "items": {"type": "string"}}},
        "required": ["channels"],
    },
    "StreamErrorEvent": {
        "type": "object",
        "description": "Data of `stream-error` (id `error`); the stream ends after it.",
        "properties": {"condition": {"type": "string"}, "text": {"type": "string"}},
        "required": ["condition", "text"],
    },
}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


_SSE_DESCRIPTION = """\
A Server-Sent Events stream (`text/event-stream`) of every change to users, from every write
path (API, admin, ingest workers). Each event is `event: <type>`, `id: <channel>@<epoch>:<n>`
(n consecutive per channel within an epoch; a Redis failover starts a new epoch, and an id of
another epoch gets `stream-reset`) and `data: <JSON>`:

| event | data |
|---|---|
| `stream-open` | empty; first, once per connection |
| `user.created`, `user.updated` | the user (`User`), as `GET /users/{id}` renders it |
| `user.deleted` | `{"id": N}` only (`UserDeletedEvent`) |
| `users.ingested` | one per stored ingest batch: \
`{"run": N, "batch": N, "count": N, "users": [User, ...]}` (`UsersIngestedEvent`) |
| `stream-reset` | `{"channels": [...]}` (`StreamResetEvent`): the events since `Last-Event-ID` \
are no longer kept; reload through `GET /users`, the stream goes on from the newest event |
| `stream-error` | `{"condition": ..., "text": ...}` (`StreamErrorEvent`), id `error`; \
the stream ends |

Reconnect with the last id received in `Last-Event-ID` (browsers do) or `?lastEventId=` to get
what was missed first, in order. Idle streams get a `: keep-alive` comment every 20 s. Delivery
is at least once: around a reconnect an event may come twice, with the same id.
"""

_SSE_OPERATION = {
    "operationId": "users_sse",
    "summary": "Stream changes to users (Server-Sent Events)",
    "description": _SSE_DESCRIPTION,
    "tags": ["users"],
    "security": [{"tokenAuth": []}, {"cookieAuth": []}],
    "parameters": [
        {
            "in": "header",
            "name": "Last-Event-ID",
            "required": False,
            "schema": {"type": "string", "example": "users@6b14a70a23be0:42"},
            "description": "Resume after this event: the `id` of the last one received "
            "(`<channel>@<epoch>:<n>`).",
        },
        {
            "in": "query",
            "name": "lastEventId",
            "required": False,
            "schema": {"type": "string"},
            "description": "The same, for clients that cannot set headers.",
        },
    ],
    "responses": {
        "200": {
            "description": "The stream; it stays open until the client or the server closes it.",
            "content": {
                "text/event-stream": {
                    "schema": {"type": "string"},
                    "example": (
                        'event: user.deleted\nid: users@6b14a70a23be0:42\ndata: {"id": 7}\n\n'
                    ),
                }
            },
            # Not OpenAPI 3.0 vocabulary (it has no way to describe events): the data schema
            # of each event type, for tools and readers.
            "x-events": {
                "stream-open": {"type": "string", "maxLength": 0},
                "user.created": _ref("User"),
                "user.updated": _ref("User"),
                "user.deleted": _ref("UserDeletedEvent"),
                "users.ingested": _ref("UsersIngestedEvent"),
                "stream-reset": _ref("StreamResetEvent"),
                "stream-error": _ref("StreamErrorEvent"),
            },
        },
        "400": _json(VALIDATION_ERROR_SCHEMA, "A malformed `Last-Event-ID` / `lastEventId`."),
        "401": _json(_ERROR_REF, "No credentials, or a bad token."),
        "403": _json(_ERROR_REF, "An account without `users.view_user`."),
        "429": _json(_ERROR_REF, "Too many streams open for this client (`Retry-After`)."),
        "503": _json(
            _ERROR_REF, "Redis, which counts the streams, is unreachable (`Retry-After`)."
        ),
    },
}


def postprocess_schema(result: dict, generator, request, public) -> dict:
    """drf-spectacular postprocessing hook: see the module docstring."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    user = schemas.get("User")
    if user:
        properties = user["properties"]
        for name in ("first_name", "last_name"):
            properties[name].update(minLength=1, maxLength=NAME_MAX_LENGTH)
        properties["email_address"].update(format="email", maxLength=EMAIL_MAX_LENGTH)
    # Copies: the result is changed below, the declarations here must stay as they are.
    schemas.update(copy.deepcopy(_EVENT_SCHEMAS))
    result["paths"]["/users/sse"] = {"get": copy.deepcopy(_SSE_OPERATION)}
    for operations in result["paths"].values():
        for operation in operations.values():
            responses = operation["responses"]
            for status, response in _AROUND_THE_VIEWS.items():
                responses.setdefault(status, copy.deepcopy(response))
            operation["responses"] = dict(sorted(responses.items()))
    return result
