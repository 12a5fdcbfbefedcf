"""Keyset ("cursor") pagination for GET /users: every page, however deep, is one indexed range
scan. The cursor holds the sort key of the row a page starts after (or before), and the order
always ends on the primary key, so rows sharing a last name or a timestamp are neither skipped
nor repeated. No `count`: counting 500k filtered rows on every page is not cheap.

Hand-written rather than DRF's CursorPagination: that one breaks ties on a non-unique ordering
by an offset inside the cursor and caps offsets at 1,000 (`offset_cutoff`), so past 1,000 users
sharing a last name it skips or repeats rows; here the cursor carries the id that breaks ties."""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime

from django.db.models import Q, QuerySet, Value
from django.db.models.functions import Upper
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

from users.selectors import (
    ORDERING_KEY_ALIAS,
    PAGE_IDS_FIRST_ALIAS,
    RECHECK_SCAN_PAGES,
    email_recheck_text,
    user_name_walk,
    user_name_walk_chunk,
    user_ordering_key,
    user_page_ids_first,
    user_rows_rechecked,
)
from users.validation import BIGINT_MAX, NAME_MAX_LENGTH, FieldError, utc_datetime

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
# The longest cursor we hand out holds a 255-character last name, each character escaped to
# six in JSON, in base64: about 2,100 characters. Anything longer is not ours.
MAX_CURSOR_CHARS = 4096
_ascii_digits = re.compile(r"[0-9]+\Z").match
# What the pagination aliases the ordering's key (users.selectors.user_ordering_key) as, unless
# the filters chose the key's expression already (users.filters.UserFilter.filter_queryset).
_SORT_KEY = ORDERING_KEY_ALIAS


class UserCursorPagination(BasePagination):
    cursor_query_param = "cursor"
    page_size_query_param = "page_size"

    def paginate_queryset(self, queryset: QuerySet, request, view=None) -> list:
        self.request = request
        self.page_size = self._page_size(request)
        order = [str(term) for term in queryset.query.order_by] or ["id"]
        self.field = order[0].lstrip("-")
        self.descending = order[0].startswith("-")
        direction = "-" if self.descending else ""
        cursor = self._decode_cursor(request)
        backwards = bool(cursor and cursor["back"])
        if _SORT_KEY not in queryset.query.annotations:
            queryset = queryset.alias(**{_SORT_KEY: user_ordering_key(self.field)})
        after = self._after(cursor["key"], backwards=backwards) if cursor else Q()
        queryset = queryset.filter(after)
        if backwards:  # read the previous page in reverse, then restore the order
            direction = "" if self.descending else "-"
        queryset = queryset.order_by(f"{direction}{_SORT_KEY}", f"{direction}id")
        # The rows the links go on from (a page of email candidates may end on one it did not
        # keep); in reading order.
        first_read = last_read = None
        text = email_recheck_text(queryset)
        walk = user_name_walk(queryset=queryset)
        if PAGE_IDS_FIRST_ALIAS in queryset.query.annotations:  # the filters' choice
            rows = user_page_ids_first(
                queryset=queryset,
                after=after,
                limit=self.page_size + 1,
                descending=direction == "-",
            )
            more = len(rows) > self.page_size
        elif text is not None or walk is not None:
            # Candidates: of an email substring (decrypted and checked), or ids walked along
            # the last-name index for a name (their rows read for the other filters).
            first_chunk = None
            if walk is not None:
                walk = walk.alias(**{_SORT_KEY: user_ordering_key(self.field)}).filter(after)
                walk = walk.order_by(f"{direction}{_SORT_KEY}", f"{direction}id")
                first_chunk = user_name_walk_chunk(queryset=queryset, wanted=self.page_size + 1)
            rows, last_read, ran_out = user_rows_rechecked(
                queryset=queryset,
                text=text,
                wanted=self.page_size + 1,
                scan_limit=self.page_size * RECHECK_SCAN_PAGES,
                after=lambda row: self._after(self._key(row), backwards=backwards),
                walk=walk,
                first_chunk=first_chunk,
            )
            more = len(rows) > self.page_size or not ran_out
            if len(rows) > self.page_size:
                last_read = None  # a full page: the links go on from its own rows
        else:
            rows = list(queryset[: self.page_size + 1])
            more = len(rows) > self.page_size
        rows = rows[: self.page_size]
        if backwards:
            rows.reverse()
            first_read, last_read = last_read, None
            self.has_next, self.has_previous = True, more
        else:
            self.has_next, self.has_previous = more, cursor is not None
        self.rows = rows
        # A short page of candidates (RECHECK_SCAN_PAGES read, few kept) goes on from the last
        # candidate read, so the next page does not read them again.
        self.first_row = first_read or (rows[0] if rows else None)
        self.last_row = last_read or (rows[-1] if rows else None)
        return rows

    def get_paginated_response(self, data) -> Response:
        return Response(
            {"next": self.get_next_link(), "previous": self.get_previous_link(), "results": data}
        )

    def get_next_link(self) -> str | None:
        if not self.has_next or self.last_row is None:
            return None
        return self._link(self.last_row, back=False)

    def get_previous_link(self) -> str | None:
        if not self.has_previous or self.first_row is None:
            return None
        return self._link(self.first_row, back=True)

    # --- cursors -------------------------------------------------------------------------

    def _key(self, row) -> list:
        value = getattr(row, self.field)
        if isinstance(value, datetime):
            value = value.isoformat()
        return [value, row.id] if self.field != "id" else [row.id]

    def _link(self, row, *, back: bool) -> str:
        raw = json.dumps({"k": self._key(row), "b": back}, separators=(",", ":"))
        token = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
        return replace_query_param(
            self.request.build_absolute_uri(), self.cursor_query_param, token
        )

    def _decode_cursor(self, request) -> dict | None:
        token = request.query_params.get(self.cursor_query_param)
        if not token:
            return None
        try:
            if len(token) > MAX_CURSOR_CHARS:
                raise ValueError
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            data = json.loads(raw)
            key = data["k"]
            expected = 1 if self.field == "id" else 2
            if not isinstance(key, list) or len(key) != expected:
                raise ValueError
            if self.field == "created_at":
                moment = datetime.fromisoformat(key[0])
                if moment.tzinfo is None:  # ours always carry their offset
                    raise ValueError
                key[0] = utc_datetime(moment, column=self.cursor_query_param)
            elif self.field == "last_name" and not _is_stored_name(key[0]):
                raise ValueError
            row_id = key[-1]
            if type(row_id) is not int or not 0 < row_id <= BIGINT_MAX:  # bool is an int too
                raise ValueError
            return {"key": key, "back": bool(data.get("b"))}
        except (
            ValueError,  # bad base64, JSON or UTF-8 among them
            TypeError,
            KeyError,
            AttributeError,
            RecursionError,  # JSON nested thousands deep
            FieldError,
        ):
            raise ValidationError(
                {self.cursor_query_param: ["Invalid cursor (it belongs to another ordering?)."]}
            ) from None

    def _after(self, key: list, *, backwards: bool) -> Q:
        """Rows strictly after `key` in reading direction (before it when paging back)."""
        greater = self.descending == backwards
        op, op_eq = ("gt", "gte") if greater else ("lt", "lte")
        if self.field == "id":
            return Q(**{f"id__{op}": key[0]})
        value, row_id = key
        if self.field == "last_name":  # the cursor holds the stored name; the order its key
            value = Upper(Value(value))
        # `key >= v AND (key > v OR id > i)`: the first term bounds the index range scan.
        return Q(**{f"{_SORT_KEY}__{op_eq}": value}) & (
            Q(**{f"{_SORT_KEY}__{op}": value}) | Q(**{_SORT_KEY: value, f"id__{op}": row_id})
        )

    def _page_size(self, request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw in (None, ""):
            return DEFAULT_PAGE_SIZE
        # ASCII digits only: str.isdigit() also says yes to "²", which int() refuses.
        if not _ascii_digits(raw) or not raw.strip("0"):
            raise ValidationError({self.page_size_query_param: ["Must be a positive integer."]})
        digits = raw.lstrip("0")
        # Capped, so no need to read a thousand digits (int() refuses more than 4,300).
        return MAX_PAGE_SIZE if len(digits) > 4 else min(int(digits), MAX_PAGE_SIZE)

    # --- OpenAPI ---------------------------------------------------------------------------

    def get_schema_operation_parameters(self, view) -> list[dict]:
        return [
            {
                "name": self.cursor_query_param,
                "required": False,
                "in": "query",
                "description": "Opaque position from a previous page's `next`/`previous` link.",
                "schema": {"type": "string"},
            },
            {
                "name": self.page_size_query_param,
                "required": False,
                "in": "query",
                "description": f"Rows per page (default {DEFAULT_PAGE_SIZE}, max {MAX_PAGE_SIZE}; "
                "larger values are capped).",
                "schema": {"type": "integer", "minimum": 1, "default": DEFAULT_PAGE_SIZE},
            },
        ]

    def get_paginated_response_schema(self, schema: dict) -> dict:
        link = {"type": "string", "nullable": True, "format": "uri"}
        return {
            "type": "object",
            "required": ["next", "previous", "results"],
            "properties": {"next": link, "previous": link, "results": schema},
        }


def _is_stored_name(value) -> bool:
    """Could be a stored last name (PostgreSQL text holds no NUL)."""
    return isinstance(value, str) and len(value) <= NAME_MAX_LENGTH and "\x00" not in value
