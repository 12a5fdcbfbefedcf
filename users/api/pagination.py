"""Keyset ("cursor") pagination for GET /users: every page, however deep, is one indexed range
scan. The cursor holds the sort key of the row a page starts after (or before), and the order
always ends on the primary key, so rows sharing a last name or a timestamp are neither skipped
nor repeated. No `count`: counting 500k filtered rows on every page is not cheap."""

from __future__ import annotations

import base64
import json
from datetime import datetime

from django.db.models import Q, QuerySet
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


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
        if cursor:
            queryset = queryset.filter(self._after(cursor["key"], backwards=backwards))
        if backwards:  # read the previous page in reverse, then restore the order
            direction = "" if self.descending else "-"
        rows = list(
            queryset.order_by(f"{direction}{self.field}", f"{direction}id")[: self.page_size + 1]
        )
        more = len(rows) > self.page_size
        rows = rows[: self.page_size]
        if backwards:
            rows.reverse()
            self.has_next, self.has_previous = True, more
        else:
            self.has_next, self.has_previous = more, cursor is not None
        self.rows = rows
        return rows

    def get_paginated_response(self, data) -> Response:
        return Response(
            {"next": self.get_next_link(), "previous": self.get_previous_link(), "results": data}
        )

    def get_next_link(self) -> str | None:
        if not self.has_next or not self.rows:
            return None
        return self._link(self.rows[-1], back=False)

    def get_previous_link(self) -> str | None:
        if not self.has_previous or not self.rows:
            return None
        return self._link(self.rows[0], back=True)

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
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            data = json.loads(raw)
            key = data["k"]
            expected = 1 if self.field == "id" else 2
            if not isinstance(key, list) or len(key) != expected:
                raise ValueError
            if self.field == "created_at":
                key[0] = datetime.fromisoformat(key[0])
            elif self.field == "last_name" and not isinstance(key[0], str):
                raise ValueError
            if not all(isinstance(part, int) for part in key[-1:]):
                raise ValueError
            return {"key": key, "back": bool(data.get("b"))}
        except (ValueError, TypeError, KeyError, AttributeError):
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
        # `field >= v AND (field > v OR id > i)`: the first term bounds the index range scan.
        return Q(**{f"{self.field}__{op_eq}": value}) & (
            Q(**{f"{self.field}__{op}": value}) | Q(**{self.field: value, f"id__{op}": row_id})
        )

    def _page_size(self, request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw in (None, ""):
            return DEFAULT_PAGE_SIZE
        if not raw.isdigit() or int(raw) < 1:
            raise ValidationError({self.page_size_query_param: ["Must be a positive integer."]})
        return min(int(raw), MAX_PAGE_SIZE)

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
