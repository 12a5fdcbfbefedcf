"""`UserFilter`: the query parameters of `GET /users`.

The `name` substring filter compiles to `UPPER(first || ' ' || last) LIKE UPPER('%…%')`,
which its trigram GIN index serves; addresses are encrypted, so `email` and `email_address` go
through their blind indexes (users.email_index, users.selectors). A substring without a
trigram (fewer than three letters or digits in a row) is refused, since no index could serve
it. Every value is validated: a bad one is a 400 that names its parameter, never silently ignored.
"""

from __future__ import annotations

import django_filters
from django import forms
from django.conf import settings
from django.db.models import QuerySet
from django_filters.fields import IsoDateTimeField

from users.models import User
from users.selectors import (
    ORDERING_KEY_ALIAS,
    SEARCH_TOO_SHORT,
    search_text_usable,
    user_contains,
    user_created_window_by_id,
    user_filter_email_address,
    user_filter_first_name,
    user_name_walk_mark,
    user_ordering_key_unindexed,
    user_substring_plan,
)
from users.validation import BIGINT_MAX, FieldError, parse_int, utc_datetime

# (field, tie-break) pairs: every ordering ends on the primary key, so it is total and the
# cursor pagination can resume exactly after the last row of a page. The pagination sorts by
# each field's key (users.selectors.user_ordering_key): last names by UPPER(last_name), the
# expression of the index that serves both this ordering and the exact `last_name` filter.
ORDERINGS = ("id", "created_at", "last_name")
# A time window's parameters (with the ordering): a list narrowed by these alone in id order has
# a plan of its own (UserFilter.filter_queryset).
_WINDOW_PARAMETERS = frozenset({"created_after", "created_before", "ordering"})


# The page a substring's plan is chosen for: the list's default (users.api.pagination).
_PAGE_SIZE = 50


def _given(value) -> bool:
    """Whether a cleaned filter value narrows the list (absent: None, "" or no terms)."""
    return value not in (None, "", [], ())


class SubstringField(forms.CharField):
    """A substring to search for: at least one trigram (users.selectors.search_text_usable),
    or a 400 naming the parameter; blank is no filter."""

    def validate(self, value):
        super().validate(value)
        if value and not search_text_usable(value):
            raise forms.ValidationError(SEARCH_TOO_SHORT, code="too_short")


class SubstringFilter(django_filters.CharFilter):
    field_class = SubstringField


EMAIL_SUBSTRING_OFF = (
    "Substring search on email addresses is turned off on this service; "
    "email_address= finds an address given whole."
)


class EmailSubstringField(SubstringField):
    """SubstringField, refused with a 400 where substring search on addresses is turned off
    (settings.EMAIL_SUBSTRING_SEARCH: the n-gram index is not kept)."""

    def validate(self, value):
        if value and not settings.EMAIL_SUBSTRING_SEARCH:
            raise forms.ValidationError(EMAIL_SUBSTRING_OFF, code="turned_off")
        super().validate(value)


class EmailSubstringFilter(django_filters.CharFilter):
    field_class = EmailSubstringField


class StrictBooleanField(forms.Field):
    """true/false (also 1/0, yes/no); anything else is an error rather than "no filter".
    In the browsable API's Filters form it is a select: any, true, false."""

    widget = forms.Select(choices=[("", "any"), ("true", "true"), ("false", "false")])
    _values = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}

    def to_python(self, value):
        if value in (None, ""):
            return None
        try:
            return self._values[str(value).strip().lower()]
        except KeyError:
            raise forms.ValidationError("Must be true or false.", code="invalid") from None


class StrictBooleanFilter(django_filters.Filter):
    field_class = StrictBooleanField


class UtcDateTimeField(IsoDateTimeField):
    """ISO 8601, made UTC here (users.validation.utc_datetime): PostgreSQL refuses offsets past
    ±15:59, and an instant outside years 1-9999 in UTC is a 400, not a database error."""

    def to_python(self, value):
        value = super().to_python(value)
        if value is None:
            return None
        try:
            return utc_datetime(value, column="")
        except FieldError as error:
            message = f"{error.message[:1].upper()}{error.message[1:]}."
            raise forms.ValidationError(message, code="invalid") from None


class UtcDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcDateTimeField


class PositiveBigIntegerField(forms.Field):
    """Plain ASCII digits (users.validation.parse_int: no "١٢", no "1_000") from 1 up to what a
    bigint holds; anything else is a 400 naming the parameter."""

    def to_python(self, value):
        if value in (None, ""):
            return None
        try:
            number = parse_int(str(value), column="")
        except FieldError:
            raise forms.ValidationError("Must be a positive integer.", code="invalid") from None
        if not 0 < number <= BIGINT_MAX:
            raise forms.ValidationError(
                f"Must be a positive integer up to {BIGINT_MAX}.", code="invalid"
            )
        return number


class IntegerFilter(django_filters.NumberFilter):
    field_class = PositiveBigIntegerField


class UserOrderingFilter(django_filters.OrderingFilter):
    def filter(self, qs: QuerySet, value):
        # "ordering=,id" splits into ["", "id"]: empty terms are no ordering, not a field "".
        value = [term for term in value or () if term]
        if not value:
            return qs
        field = value[0]
        descending = field.startswith("-")
        return qs.order_by(field, "-id" if descending else "id")


class UserFilter(django_filters.FilterSet):
    # Each box of the browsable API's Filters form is labelled with its query parameter's own
    # name (set below the class); what it does is the help text, which the schema also uses.
    name = SubstringFilter(
        method="filter_name",
        help_text='Case-insensitive substring of the first name, last name or "first last"; '
        "at least 3 letters or digits in a row.",
    )
    email = EmailSubstringFilter(
        method="filter_email",
        help_text="Case-insensitive substring of the email address; at least 3 letters or "
        "digits in a row.",
    )
    first_name = django_filters.CharFilter(
        method="filter_first_name",
        help_text="The first name, exact and case-insensitive.",
    )
    last_name = django_filters.CharFilter(
        method="filter_last_name",
        help_text="The last name, exact and case-insensitive.",
    )
    email_address = django_filters.CharFilter(
        method="filter_email_address",
        help_text="The email address, exact and case-insensitive.",
    )
    created_after = UtcDateTimeFilter(
        field_name="created_at",
        lookup_expr="gte",
        help_text="Created at or after this ISO 8601 time.",
    )
    created_before = UtcDateTimeFilter(
        field_name="created_at",
        lookup_expr="lt",
        help_text="Created before this ISO 8601 time.",
    )
    deleted = StrictBooleanFilter(
        method="filter_deleted",
        help_text="true: deleted users only; false: users not deleted.",
    )
    merged = StrictBooleanFilter(
        method="filter_merged",
        help_text="true: merged users only; false: users not merged.",
    )
    parent_user_id = IntegerFilter(help_text="Users merged into this user id.")
    ordering = UserOrderingFilter(
        fields=ORDERINGS,
        help_text="id, created_at or last_name; prefix with - for descending (default: id).",
    )

    class Meta:
        model = User
        fields: list[str] = []

    # Substring filters compare through the trigram indexes unless the list is to walk its
    # ordering's index (filter_queryset).
    _substrings_indexed = True

    def filter_queryset(self, queryset: QuerySet) -> QuerySet:
        unfiltered = queryset
        queryset = super().filter_queryset(queryset)
        data = self.form.cleaned_data
        ordering = [term for term in data.get("ordering") or () if term]
        field = ordering[0].lstrip("-") if ordering else "id"
        # A substring: its matches sorted, or the ordering's index walked, by their number in a
        # sample of the table (users.selectors.user_substring_plan), not by the planner's
        # estimate, which flips between the two (10 ms or 670 ms for name=ash at 5M users).
        # Either plan is forced on the planner; same rows, same order, same cursors.
        if _given(data.get("name")) or _given(data.get("email")):
            # In last-name order, a `name` substring is checked on the index walked
            # (users.selectors.user_name_walk) and rows are read for its matches alone, unless
            # an exact last name narrows the walk to its own range already.
            named = None
            if field == "last_name" and _given(name := (data.get("name") or "").strip()):
                if not _given(data.get("last_name")):
                    named = user_contains(queryset=unfiltered, name=True, email=False, text=name)
            plan = user_substring_plan(queryset=queryset, field=field, page=_PAGE_SIZE, named=named)
            if plan.how == "walk":
                self._substrings_indexed = False
                try:
                    queryset = super().filter_queryset(unfiltered)
                finally:
                    self._substrings_indexed = True
                if named is not None:
                    queryset = user_name_walk_mark(
                        queryset=queryset, text=name, ids_per_match=plan.ids_per_match
                    )
            else:
                key = user_ordering_key_unindexed(field)
                queryset = queryset.alias(**{ORDERING_KEY_ALIAS: key})
        # A time window alone, in id order: the created_at index read for the window's ids,
        # or the primary key walked, by the planner's estimate of the window's size
        # (users.selectors.user_created_window_by_id). Same rows, same order, same cursors.
        window = data.get("created_after") is not None or data.get("created_before") is not None
        others = [name for name in self.filters if name not in _WINDOW_PARAMETERS]
        if field == "id" and window and not any(_given(data.get(name)) for name in others):
            queryset = user_created_window_by_id(
                queryset=queryset,
                created_after=data.get("created_after"),
                created_before=data.get("created_before"),
            )
        return queryset

    def filter_name(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        value = value.strip()
        if not value:
            return queryset
        # A substring of the first or the last name is a substring of "first last" too, so
        # one condition (and one trigram index) covers all three.
        return user_contains(
            queryset=queryset, name=True, email=False, text=value, indexed=self._substrings_indexed
        )

    def filter_email(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        if not value:
            return queryset
        return user_contains(
            queryset=queryset, name=False, email=True, text=value, indexed=self._substrings_indexed
        )

    # Through the "first last" trigram index for a rare name, along the ordering's index for a
    # common one (users.selectors.user_filter_first_name); no b-tree of its own, which every
    # ingested row would pay for.
    def filter_first_name(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return user_filter_first_name(queryset=queryset, name=value)

    # `UPPER(last_name) = UPPER(value)`: the leading expression of users_last_name_names_idx,
    # which also orders `ordering=last_name`, so this filter is one index range under every
    # ordering (in id order within it).
    def filter_last_name(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset.filter(last_name__iexact=value)

    # By the address's keyed digest (users.selectors.user_filter_email_address): one range of
    # the digest's index, whatever the address's domain.
    def filter_email_address(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return user_filter_email_address(queryset=queryset, address=value)

    def filter_deleted(self, queryset: QuerySet, name: str, value: bool | None) -> QuerySet:
        if value is None:
            return queryset
        return queryset.filter(deleted_at__isnull=not value)

    def filter_merged(self, queryset: QuerySet, name: str, value: bool | None) -> QuerySet:
        if value is None:
            return queryset
        return queryset.filter(merged_at__isnull=not value)


# Each filter's label is its query parameter's name. Set on the class's filters, which every
# FilterSet instance copies: a form field built (and cached) earlier would keep the old label.
for _name, _declared in UserFilter.base_filters.items():
    _declared.label = _name
