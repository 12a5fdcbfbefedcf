"""Reads of users: cache first, PostgreSQL as the source of truth."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from importlib import import_module
from types import SimpleNamespace
from typing import Any, NamedTuple

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import EmptyResultSet
from django.db import DEFAULT_DB_ALIAS, OperationalError, connection, connections, transaction
from django.db.models import (
    BigIntegerField,
    BooleanField,
    CharField,
    DateTimeField,
    ExpressionWrapper,
    F,
    FloatField,
    Func,
    IntegerField,
    Max,
    Min,
    Q,
    QuerySet,
    Value,
)
from django.db.models.expressions import Expression
from django.db.models.functions import Concat, Upper
from django.utils import timezone

from users import cache
from users.access import (
    InvalidCredentials,
    Principal,
    principal_for_account,
    token_digest,
    token_from_authorization,
)
from users.email_index import email_digests, email_holds, email_ngram_sets
from users.models import USER_ID_BLOCK_BITS, ApiToken, StaleCacheEntry, User, UserCreatedSpan
from users.payloads import user_payload
from users.refusals import INVALID_TOKEN, MALFORMED_AUTHORIZATION
from users.validation import EMAIL_MAX_LENGTH

# Ids are PostgreSQL bigints; anything larger cannot exist (and must not reach a query).
MAX_USER_ID = 2**63 - 1


def user_list(*, using: str = DEFAULT_DB_ALIAS) -> QuerySet[User]:
    """All users in primary-key order; the API narrows it with users.filters.UserFilter.
    `using`: a replica's alias for reads that may be a moment stale (users.consistency)."""
    return User.objects.using(using).order_by("id")


# --- Searching: the rules the API's filters and the admin's search box share ------------------

# A substring search is served by a trigram index (users.models) only when the text holds a
# trigram: three letters or digits in a row (pg_trgm splits words on anything else). Shorter
# texts ("q", "zq", "a b") have no trigram to look up, so PostgreSQL would read every row.
SEARCH_MIN_RUN = 3
_has_trigram = re.compile(rf"[^\W_]{{{SEARCH_MIN_RUN}}}").search
SEARCH_TOO_SHORT = (
    f"Must contain at least {SEARCH_MIN_RUN} letters or digits in a row "
    "(shorter substrings cannot use an index)."
)


def full_name_expression() -> Concat:
    """`first_name || ' ' || last_name`, the expression the "first last" index is built on."""
    return Concat("first_name", Value(" "), "last_name")


def search_text_usable(text: str) -> bool:
    """Whether a substring search for `text` can be served by the trigram indexes."""
    return _has_trigram(text) is not None


# Past this many users of one first name (by the planner's estimate), the exact `first_name`
# filter walks the list's ordering index instead of the trigram index
# (user_filter_first_name): a rare name costs at most this many rows read and sorted, a common
# one at most a page times users / this many rows walked (51k at 5M users).
FIRST_NAME_COMMON_ABOVE = 5000


def user_filter_first_name(*, queryset: QuerySet[User], name: str) -> QuerySet[User]:
    """`queryset` narrowed to the users whose first name is `name`, case-insensitively, with
    a plan bounded for rare and for common names alike.

    A rare name is found through the "first last" trigram index ("first last" starts with
    "<name> " whenever the first name matches; the exact comparison decides) and its few
    matches are sorted. A common one (23k Ashleys at 5M users) read there and sorted cost
    ~200 ms, and grows with the table; instead the list walks its ordering's index (id,
    created_at or UPPER(last_name)) and meets a match every users/matches rows. The planner
    cannot choose between the two itself: it multiplies the selectivities of the prefix and of
    the exact comparison, which say the same thing, and so expects 1/200 of the matches. Nor
    is its estimate of the prefix alone steady: a name of 1 user in 200 falls in one bin of its
    100-bin histogram or in none, so the plan changed with each ANALYZE (20 or 113 ms for
    Ashley at 5M users). Which is decided by the name's count on a fixed sample of the table
    (user_matches_estimate); both plans return the same rows in the same order."""
    named = User.objects.using(queryset.db).filter(first_name__iexact=name)
    estimate, _ = user_matches_estimate(queryset=named)
    if estimate > FIRST_NAME_COMMON_ABOVE:
        # UPPER(first_name) = UPPER(name): no index holds it, so the planner reads the rows
        # in the page's order and filters them.
        return queryset.filter(first_name__iexact=name)
    return queryset.alias(full_name=full_name_expression()).filter(
        full_name__istartswith=f"{name} ", first_name__iexact=name
    )


def user_filter_email_address(*, queryset: QuerySet[User], address: str) -> QuerySet[User]:
    """`queryset` narrowed to the users whose email address is `address`, case-insensitively:
    by the address's exact-match digest under each blind-index key (users.email_index), one
    range of users_email_digest_idx each. The digests are 128 bits, so no check follows."""
    return queryset.filter(email_digest__in=email_digests(address))


# pg_trgm's words: runs of letters and digits (anything else separates them).
_trigram_words = re.compile(r"[^\W_]+").findall


def user_contains(
    *, queryset: QuerySet[User], name: bool, email: bool, text: str, indexed: bool = True
) -> QuerySet[User]:
    """`queryset` narrowed to the users whose "first last" name (`name`) contains `text`,
    case-insensitively (`UPPER(…) LIKE UPPER('%text%')`, through its trigram index), or to the
    candidates whose encrypted address (`email`) may contain it: those holding every bucket of
    its trigrams (users.email_index), which the pagination decrypts and checks
    (EMAIL_RECHECK_ALIAS, user_rows_rechecked). Check search_text_usable first.

    A text of several words of three letters or more ("Ashley Ramirez") is handed to the index
    one word at a time, `LIKE '%ASHLEY%' AND LIKE '%RAMIREZ%'`, which the whole text implies:
    given the whole text, pg_trgm also looks up the trigrams that mark a word's start or end
    ("EY ", "  R", " RA"), and their posting lists hold most of the table (half the index's
    time for a full name at 5M users). The whole text then decides among the few rows found,
    compared on a copy of the expression that no index holds (`|| ''`). A shorter word ("Jo
    Smith") keeps the whole text for the index: there the word's boundary is what is rare.

    `indexed=False`: every comparison on the unindexed copies (the same rows), so that the
    planner walks the list's ordering index with them as filters (user_substring_plan)."""
    words = _trigram_words(text)
    split = len(words) > 1 and min(len(word) for word in words) >= SEARCH_MIN_RUN
    queryset = queryset.alias(
        full_name=full_name_expression(),
        full_name_unindexed=Concat(full_name_expression(), Value(""), output_field=CharField()),
    )
    conditions = Q()
    if name:
        if not indexed:
            conditions = Q(full_name_unindexed__icontains=text)
        elif split:
            conditions = Q(full_name_unindexed__icontains=text)
            for word in words:
                conditions &= Q(full_name__icontains=word)
        else:
            conditions = Q(full_name__icontains=text)
    if email and settings.EMAIL_SUBSTRING_SEARCH:
        # Candidates, by the buckets of the text's trigrams; the pagination decrypts them and
        # keeps those that hold the text (user_rows_rechecked), told by this alias.
        queryset = queryset.alias(
            email_ngrams_unindexed=_unindexed_ngrams(),
            **{EMAIL_RECHECK_ALIAS: Value(text, output_field=CharField())},
        )
        column = "email_ngrams" if indexed else "email_ngrams_unindexed"
        candidates = Q()
        # Longer than any stored address: nothing holds it (and its trigrams are not hashed).
        sets = email_ngram_sets(text) if len(text) <= EMAIL_MAX_LENGTH else []
        for buckets in sets:
            candidates |= Q(**{f"{column}__contains": buckets})
        if not sets:  # a bucket no address has (buckets are not negative): an empty index range
            candidates = Q(**{f"{column}__contains": [-1]})
        if name:
            # A name match needs no check: say so to it (the admin's name-or-email search).
            queryset = queryset.annotate(
                **{NAME_HIT_ALIAS: ExpressionWrapper(conditions, output_field=BooleanField())}
            )
        conditions |= candidates
    elif email:
        # Substring search on addresses is off (settings.EMAIL_SUBSTRING_SEARCH): the admin's
        # box still finds an address given whole (the API refuses `email=` first).
        conditions |= Q(email_digest__in=email_digests(text))
    return queryset.filter(conditions)


def _unindexed_ngrams() -> Func:
    """`email_ngrams || '{}'`: the same array, on an expression no index holds (a walk)."""
    return Func(
        F("email_ngrams"),
        template="(%(expressions)s || '{}'::int4[])",
        output_field=ArrayField(IntegerField()),
    )


# A list narrowed by `email` (user_contains) is a list of candidates: the pagination keeps those
# whose address holds this alias's text (user_rows_rechecked). NAME_HIT_ALIAS: a row found by
# its name in the same search (the admin's), kept whatever its address.
EMAIL_RECHECK_ALIAS = "email_recheck_text"
NAME_HIT_ALIAS = "name_hit"
# How many candidates a page reads at most, in pages' worth, before it is served short (with a
# link to go on from the last candidate read): bounds a page whose candidates are mostly
# false, which takes a text crafted against the buckets.
RECHECK_SCAN_PAGES = 20


def email_recheck_text(queryset: QuerySet) -> str | None:
    """The text a list's email candidates must hold (None: no email substring filter)."""
    annotation = queryset.query.annotations.get(EMAIL_RECHECK_ALIAS)
    return None if annotation is None else annotation.value


def user_matches_search(user: User, text: str) -> bool:
    """Whether a candidate of an email substring search is a match (see EMAIL_RECHECK_ALIAS)."""
    return bool(getattr(user, NAME_HIT_ALIAS, False)) or email_holds(user.email_address, text)


def user_rows_rechecked(
    *, queryset: QuerySet[User], text: str | None, wanted: int, scan_limit: int,
    after: Callable[[User], Q] | None = None, walk: QuerySet | None = None,
    first_chunk: int | None = None,
) -> tuple[list[User], User | None, bool]:  # fmt: skip
    """The first `wanted` matches among `queryset`'s candidates (user_matches_search; with
    `text` None, every row of `queryset` is one), in its order, reading at most about
    `scan_limit` candidates; with the last candidate read and whether the candidates ran out.
    `after(row)`: the rows past a row (keyset lists); without it, chunks by offset (the admin's
    pages, at most MAX_PAGES deep).

    `walk` (user_name_walk, ordered and cut by the cursor as `queryset` is): where the
    candidates' ids are read from, in chunks (an index-only walk), each chunk's rows then read
    from `queryset` by primary key; a candidate is then an id walked. `first_chunk`: how many
    candidates the first read takes (else `wanted`); each next one reads twice as many."""
    found: list[User] = []
    examined, chunk, last = 0, first_chunk or wanted, None
    while True:
        source = queryset if walk is None else walk
        part = source.filter(after(last)) if after and last else source
        start = 0 if after else examined
        read = list(part[start : start + chunk])
        examined += len(read)
        rows = read if walk is None else _rows_by_id(queryset=queryset, ids=read)
        found.extend(row for row in rows if text is None or user_matches_search(row, text))
        if read:
            last = read[-1]
        if len(read) < chunk:
            return found, last, True
        if len(found) >= wanted or examined >= scan_limit:
            return found, last, False
        chunk = min(chunk * 2, max(scan_limit - examined, 1))


def _rows_by_id(*, queryset: QuerySet[User], ids: list) -> list[User]:
    """The rows of `queryset` among the users `ids` (rows with an id, read by primary key), in
    their order."""
    rows = {row.id: row for row in queryset.order_by().filter(id__in=[user.id for user in ids])}
    return [rows[user.id] for user in ids if user.id in rows]


# A list ordered by last name with a `name` substring (users.filters.UserFilter) may be read
# ids first: its text under this alias. users_last_name_names_idx holds both names beside the
# order's keys, so the ids of the users whose name holds the text are walked on the index alone
# (user_name_walk), and only their rows are read, for the list's other filters.
NAME_WALK_ALIAS = "name_walk_text"
# The ids such a list expects to walk per user of its page (SubstringPlan.ids_per_match): the
# size of its first chunk, so that a page is mostly read in one walk.
NAME_WALK_IDS_PER_MATCH_ALIAS = "name_walk_ids_per_match"
# What reading a user's entry on an index-only walk costs against reading its row in the table
# (0.4 µs to check the name on an entry, against ~5 µs to fetch a row at random at 5M users).
INDEX_ONLY_ENTRY_COST = 0.1


def user_name_walk(*, queryset: QuerySet[User]) -> QuerySet[User] | None:
    """For a list read ids first (NAME_WALK_ALIAS): its users whose name holds the text,
    compared on the index's copy of the names, as (id, last_name) rows (what a cursor needs),
    so that PostgreSQL walks users_last_name_names_idx alone; else None."""
    annotation = queryset.query.annotations.get(NAME_WALK_ALIAS)
    if annotation is None:
        return None
    users = User.objects.using(queryset.db)
    found = user_contains(
        queryset=users, name=True, email=False, text=annotation.value, indexed=False
    )
    return found.values_list("id", "last_name", named=True)


def user_name_walk_mark(*, queryset: QuerySet[User], text: str, ids_per_match: float):
    """`queryset`, to be read ids first along the last-name index for the name `text`
    (user_name_walk), `ids_per_match` ids expected per user of a page."""
    return queryset.alias(
        **{
            NAME_WALK_ALIAS: Value(text, output_field=CharField()),
            NAME_WALK_IDS_PER_MATCH_ALIAS: Value(ids_per_match, output_field=FloatField()),
        }
    )


def user_name_walk_chunk(*, queryset: QuerySet[User], wanted: int) -> int:
    """How many ids the first walk of a list read ids first reads, for `wanted` users: its
    expected ids per user, with a quarter more for the estimate's error."""
    annotation = queryset.query.annotations.get(NAME_WALK_IDS_PER_MATCH_ALIAS)
    per_match = annotation.value if annotation is not None else 1.0
    return max(wanted, min(round(wanted * per_match * 1.25), wanted * RECHECK_SCAN_PAGES))


def user_search(
    *, text: str, queryset: QuerySet[User] | None = None, page: int = 50
) -> QuerySet[User]:
    """Users whose "first last" name or email address contains `text` (case-insensitive): the
    admin's search box, with the expressions (and so the indexes) of the API's `name` and
    `email` filters (user_contains: email candidates, checked by the admin's paginator), and
    their choice of plan for a list in id order of `page` rows (user_substring_plan). Check
    search_text_usable first."""
    queryset = user_list() if queryset is None else queryset
    found = user_contains(queryset=queryset, name=True, email=True, text=text)
    if user_substring_plan(queryset=found, field="id", page=page).how == "walk":
        return user_contains(queryset=queryset, name=True, email=True, text=text, indexed=False)
    return found


# The alias under which a list's ordering key is selected (users.api.pagination): a filter that
# sets it first (users.filters.UserFilter) chooses the key's expression for the whole list.
ORDERING_KEY_ALIAS = "sort_key"


def user_ordering_key(field: str) -> Expression:
    """What a list ordered by `field` sorts by (the API's `ordering`, the admin's columns): last
    names case-insensitively, as UPPER(last_name), the expression that the exact `last_name`
    filter compares and users_last_name_names_idx holds; other fields as they are."""
    return Upper(field) if field == "last_name" else F(field)


def user_ordering_key_unindexed(field: str) -> Expression:
    """user_ordering_key(field), the same values in the same order, as an expression no index
    holds (`id + 0`, `created_at + interval '0'`, `UPPER(last_name) || ''`): the planner must
    then find the rows through the filters' indexes and sort them."""
    if field == "last_name":
        return Concat(Upper("last_name"), Value(""), output_field=CharField())
    if field == "created_at":
        shifted = F("created_at") + Value(timedelta(0))
        return ExpressionWrapper(shifted, output_field=DateTimeField())
    return ExpressionWrapper(F("id") + Value(0), output_field=BigIntegerField())


# How many of the table's pages a substring filter's frequency is measured on
# (user_matches_estimate): a fixed sample (the same pages every time, so cached, and one plan
# for one request), ~6,000 users.
SUBSTRING_SAMPLE_PAGES = 100
# Walking an ordering's index costs a row read per row walked; along id and created_at the
# rows sit in the table's order (ids and creation times grow as the rows were loaded), so a
# row walked costs about 1/20 of a row fetched at random by the trigram index's bitmap (0.2 µs
# against ~5 µs at 5M users); along last names it costs the same.
WALK_COST = {"id": 0.05, "created_at": 0.05, "last_name": 1.0}


def user_matches_estimate(*, queryset: QuerySet[User]) -> tuple[float, float]:
    """How many users `queryset` holds, counted on a fixed sample of the table's pages
    (TABLESAMPLE SYSTEM … REPEATABLE) and scaled up, and how many users there are (the
    planner's count); one query. Exact for a table of at most SUBSTRING_SAMPLE_PAGES pages.

    The planner's own estimate of `LIKE '%ash%'` comes from a 100-value histogram of the
    expression: a substring in 1% of the names is found there once or not at all, so between
    two ANALYZE runs its estimate moved from 50,000 to 496 (the floor) at 5M users, and with
    it the plan (10 ms or 670 ms)."""
    table = User._meta.db_table
    try:
        sql, params = queryset.order_by().values("id").query.get_compiler(queryset.db).as_sql()
    except EmptyResultSet:  # a filter Django knows matches nothing (`id__in=[]`)
        return 0.0, 1.0
    quoted = connections[queryset.db].ops.quote_name(table)
    # The share of pages sampled, from the table's size on disk (its statistics may be older).
    share = (
        "SELECT least(1.0, %s::float8 / greatest(1, pg_relation_size(%s::regclass) / "
        "current_setting('block_size')::int))"
    )
    sampled = f"{quoted} TABLESAMPLE SYSTEM ((100 * ({share}))) REPEATABLE (0)"
    sql = sql.replace(f"FROM {quoted}", f"FROM {sampled}", 1)
    with connections[queryset.db].cursor() as cursor:
        cursor.execute(
            f"SELECT (SELECT count(*) FROM ({sql}) AS matches), ({share}), reltuples "
            "FROM pg_class WHERE oid = %s::regclass",
            [SUBSTRING_SAMPLE_PAGES, table, *params, SUBSTRING_SAMPLE_PAGES, table, table],
        )
        hits, sampled_share, users = cursor.fetchone()
    matches = hits / sampled_share
    return matches, max(float(users), matches, 1.0)


class SubstringPlan(NamedTuple):
    """user_substring_plan's choice: "walk" or "sort", and for a walk of ids along the last-name
    index, how many ids it walks per match of the whole list (else 1)."""

    how: str
    ids_per_match: float = 1.0


def user_substring_plan(
    *, queryset: QuerySet[User], field: str, page: int, named: QuerySet[User] | None = None
) -> SubstringPlan:
    """How a list with substring filters (`name`, `email`) ordered by `field` is best read:
    "walk" its ordering's index with the filters (rows read: page / the matches' share), or
    "sort" its matches found through the trigram indexes (rows read: the matches), whichever
    reads fewer, rows walked weighed by WALK_COST. By user_matches_estimate, not the planner's
    estimate; the caller then leaves the planner only that plan (user_contains(indexed=False)
    for a walk, user_ordering_key_unindexed for a sort).

    `named`: the users the list's `name` substring alone finds, given where the walk is of ids
    along the last-name index (NAME_WALK_ALIAS): entries walked then cost
    INDEX_ONLY_ENTRY_COST, and rows are read only for the ids of those users."""
    matches, users = user_matches_estimate(queryset=queryset)
    if matches < 1:
        return SubstringPlan("sort")
    walked = page * users / matches
    ids_per_match = 1.0
    if named is not None:
        named_matches, _ = user_matches_estimate(queryset=named)
        ids_per_match = named_matches / matches
        walked = page * users / named_matches * INDEX_ONLY_ENTRY_COST + page * ids_per_match
    how = "walk" if walked * WALK_COST.get(field, 1.0) < matches else "sort"
    return SubstringPlan(how, ids_per_match)


# The alias a filter sets on a list whose page is read in two steps (users.api.pagination,
# user_page_ids_first): the page's ids, from an index that holds them with the filter's column
# (an index-only scan, no table rows read), then those users' rows by primary key.
PAGE_IDS_FIRST_ALIAS = "page_ids_first"

# A created_at window in id order walks the primary key through the ids of the blocks it
# overlaps (UserCreatedSpan) while the planner expects more than this share of those ids to be
# the window's; else its page's ids are read from users_created_at_id_idx
# (user_created_window_by_id).
CREATED_WINDOW_WALK_ABOVE = 0.5
# Past this many blocks of ids (ids spread thinly over their range, a block or so per user),
# the spans are not read: reading them would cost more than walking the window.
CREATED_SPAN_BLOCKS_MAX = 100_000


def _planner_rows(queryset: QuerySet) -> float:
    """The planner's estimate of the rows `queryset` returns (an EXPLAIN: planning only)."""
    plan = json.loads(queryset.order_by().explain(format="json"))
    return float(plan[0]["Plan"]["Plan Rows"])


def user_created_window_ids(
    *, created_after: datetime | None, created_before: datetime | None, using: str
) -> tuple[int, int] | None:
    """The lowest and the highest id a user created in the window may have: those of the first
    and the last block of ids whose span of creation times (UserCreatedSpan) meets the window,
    (1, 0) where none does; None where the spans are too many to read (CREATED_SPAN_BLOCKS_MAX)."""
    table = UserCreatedSpan._meta.db_table
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", [table])
        (blocks,) = cursor.fetchone()
    if blocks > CREATED_SPAN_BLOCKS_MAX:
        return None
    spans = UserCreatedSpan.objects.using(using)
    if created_after is not None:
        spans = spans.filter(high__gte=created_after)
    if created_before is not None:
        spans = spans.filter(low__lt=created_before)
    found = spans.aggregate(first=Min("block"), last=Max("block"))
    first, last = found["first"], found["last"]
    if first is None:
        return 1, 0
    return first << USER_ID_BLOCK_BITS, ((last + 1) << USER_ID_BLOCK_BITS) - 1


def user_created_window_by_id(
    *, queryset: QuerySet[User], created_after: datetime | None, created_before: datetime | None
) -> QuerySet[User]:
    """`queryset`, narrowed by a created_at window alone and listed in id order, set to be read
    with a plan bounded by the window's size rather than by where its rows sit among the ids.

    The planner walks the primary key filtering by the window, a bet that matches are spread
    along the ids; they are not (ids and creation times grow together), so a window of the
    last year was reached after 4.5M older users at 5M users (1.4 s), and one of every year but
    the first after 500k. Ids and creation times cannot be tied by a rule (API users get ids
    from 10^15 with any created_at, a CSV may carry any id), but the creation times each block
    of 1,024 ids holds are kept (UserCreatedSpan): the window's users have ids within the
    blocks it meets. Where the window holds most of those ids (CREATED_WINDOW_WALK_ABOVE, by
    the planner's estimates), the primary key is walked through them alone (an exact
    narrowing), meeting a match at almost every row; else the page's ids
    are read from users_created_at_id_idx (an index-only scan of the window, ~0.1 µs a user,
    sorted for the page's ids, PAGE_IDS_FIRST_ALIAS) and their rows fetched by primary key."""
    window = _planner_rows(queryset)
    walked = queryset
    users = queryset.model.objects.using(queryset.db).all()
    ids = user_created_window_ids(
        created_after=created_after, created_before=created_before, using=queryset.db
    )
    if ids is not None:
        walked = queryset.filter(id__gte=ids[0], id__lte=ids[1])
        users = users.filter(id__gte=ids[0], id__lte=ids[1])
    # The window lies within those ids: where the planner expects fewer, it misjudges the range.
    if window > max(_planner_rows(users), window) * CREATED_WINDOW_WALK_ABOVE:
        return walked
    # `id + 0`: the same values in the same order, on an expression the primary key does not
    # hold, so the page's ids are sorted from the window rather than walked for.
    unindexed_id = user_ordering_key_unindexed("id")
    return queryset.alias(**{ORDERING_KEY_ALIAS: unindexed_id, PAGE_IDS_FIRST_ALIAS: Value(True)})


# How many ids past a cursor a page of a created_at window in id order looks at first
# (user_page_ids_first): where the window holds one user in 20 there or more (a window at the
# start of time, or spread evenly), the page is found in these alone.
WINDOW_PROBE_IDS = 1000


def user_page_ids_first(
    *, queryset: QuerySet[User], after: Q, limit: int, descending: bool
) -> list[User]:
    """The first `limit` users of `queryset` (narrowed by `after`, the page's cursor, and
    ordered by id or by a key holding the same values, PAGE_IDS_FIRST_ALIAS), in id order
    (`descending`: from the highest).

    First among the next WINDOW_PROBE_IDS ids past the cursor only (a range of the primary
    key): enough when matches are dense there. Otherwise the page's ids are read through the
    filters' index alone (the inner query: an index-only scan, sorted) and their rows fetched
    by primary key. Both return exactly the first `limit` matches: the probe only when it found
    them all within its range, or when no id lies beyond it."""
    users = queryset.model.objects.using(queryset.db)
    order = "-id" if descending else "id"
    nearest = users.filter(after).order_by(order).values_list("id", flat=True)
    last = list(nearest[WINDOW_PROBE_IDS - 1 : WINDOW_PROBE_IDS])
    probe = queryset
    if last:
        probe = queryset.filter(**{"id__gte" if descending else "id__lte": last[0]})
    rows = list(probe.order_by(order)[:limit])
    if len(rows) == limit or not last:
        return rows
    ids = queryset.values("id")[:limit]
    return list(users.filter(id__in=ids).order_by(order))


def user_count_bounded(*, queryset: QuerySet[User], exact_up_to: int) -> tuple[int, bool]:
    """How many users `queryset` holds, exactly when at most `exact_up_to` (a count that stops
    there), else the planner's estimate (never below exact_up_to + 1); and whether exact.

    A full count of a filtered list reads every match, millions of rows for a broad one; this
    reads at most exact_up_to + 1 of them."""
    queryset = queryset.order_by()
    exact = queryset[: exact_up_to + 1].count()
    if exact <= exact_up_to:
        return exact, True
    return user_count_estimate(queryset=queryset, at_least=exact_up_to + 1), False


def user_matches_ids(*, queryset: QuerySet[User], text: str, up_to: int) -> list[int] | None:
    """The ids of the matches among a list of email candidates (EMAIL_RECHECK_ALIAS) when it
    holds at most `up_to` candidates, in one read of their ids, addresses and name hits; None
    when it holds more (user_count_estimate then, false candidates being rare)."""
    # In no order: any up_to + 1 of them tell "more", and a scan stops there.
    queryset = queryset.order_by()
    columns = ["id", "email_address"]
    if NAME_HIT_ALIAS in queryset.query.annotations:
        columns.append(NAME_HIT_ALIAS)
    candidates = list(queryset.values_list(*columns, named=True)[: up_to + 1])
    if len(candidates) > up_to:
        return None
    return [row.id for row in candidates if user_matches_search(row, text)]


def user_count_estimate(*, queryset: QuerySet[User], at_least: int) -> int:
    """The planner's estimate of the users `queryset` holds (an EXPLAIN), at least `at_least`."""
    if not queryset.query.has_filters():
        estimate = user_count()[0]
    else:
        plan = json.loads(queryset.explain(format="json"))
        estimate = int(plan[0]["Plan"]["Plan Rows"])
    return max(estimate, at_least)


def user_created_years() -> range:
    """The years from the oldest user's creation to the newest one's (two ends of the
    created_at index, whatever the table's size): the admin's date drill-down."""
    bounds = User.objects.aggregate(first=Min("created_at"), last=Max("created_at"))
    if bounds["first"] is None:
        return range(0)
    first, last = (timezone.localtime(bounds[end]) for end in ("first", "last"))
    return range(first.year, last.year + 1)


# --- A bound on every read a client can ask for -------------------------------------------------

# PostgreSQL's SQLSTATE for a statement cancelled by statement_timeout (query_canceled).
_QUERY_CANCELED = "57014"


class QueryTimeout(Exception):
    """A read ran past settings.API_QUERY_TIMEOUT_MS and PostgreSQL cancelled it."""


@contextmanager
def bounded_read(*, using: str = DEFAULT_DB_ALIAS) -> Iterator[None]:
    """Run the enclosed queries in one transaction whose statements PostgreSQL cancels after
    settings.API_QUERY_TIMEOUT_MS (0: no limit); raises QueryTimeout when it does.

    For the reads a client shapes (API lists, admin lists and searches): the indexes serve
    every shape we know of, and this bounds the ones we do not. `SET LOCAL` ends with the
    transaction, so the connection goes back to the pool (or to the next request) with its own
    limit; ingest, migrations and index builds never pass through here.

    PostgreSQL's JIT is off for them too: it compiles a plan whose estimated cost passes
    jit_above_cost, which the sample count of a substring filter (user_matches_estimate) does
    at 5M users although it reads 100 pages in ~1 ms; the compiling took 4-5 ms of each such
    request (and grew with the table), for queries that never run long enough to gain."""
    limit = int(settings.API_QUERY_TIMEOUT_MS)
    if limit <= 0:
        yield
        return
    try:
        with transaction.atomic(using=using):
            with connections[using].cursor() as cursor:
                cursor.execute(f"SET LOCAL statement_timeout = {limit}; SET LOCAL jit = off")
            yield
    except OperationalError as error:
        if getattr(error.__cause__, "sqlstate", None) == _QUERY_CANCELED:
            raise QueryTimeout from error
        raise


def user_get_payload(*, user_id: int) -> dict[str, Any] | None:
    """One user's payload from Redis, or from PostgreSQL (filling Redis) on a miss."""
    cached = cache.cached_user_json(user_id)
    if cached is not None:
        return json.loads(cached)
    return user_load_payload(user_id=user_id)


def user_load_payload(*, user_id: int) -> dict[str, Any] | None:
    """One user's payload read from PostgreSQL, filling the cache (the miss half of a read).

    The fill is leased before the row is read (users.cache.user_fill_lease): a write or delete
    committed after this read voids it, so an older row never replaces a newer state."""
    if not 0 < user_id <= MAX_USER_ID:
        return None
    lease = cache.user_fill_lease(user_id)
    # Always from the primary: a replica's older copy must never be put into Redis.
    user = User.objects.using(DEFAULT_DB_ALIAS).filter(id=user_id).first()
    if user is None:
        if lease is not None:
            cache.user_fill_lease_release(user_id, lease)
        return None
    payload = user_payload(user)
    if lease is not None:
        version = (
            cache.ingest_version(run_id=user.source_run_id, line=user.source_line)
            if user.source_run_id is not None
            else 0
        )
        cache.cache_user_fill(user.id, lease=lease, version=version, payload=payload)
    return payload


def principal_for_token(
    *, token: str, before_lookup: Callable[[], None] | None = None
) -> Principal | None:
    """Who a token belongs to and what it may do; None for an unknown, expired or revoked token
    or an inactive account. Redis first (a few seconds' copy), then PostgreSQL, unless the token
    was refused a moment ago. `before_lookup` runs when Redis has no copy, before anything else
    is asked: the API charges the lookup to the client's address there (and may refuse it)."""
    digest = token_digest(token)
    if digest is None:
        return None
    return principal_for_digest(digest=digest, before_lookup=before_lookup)


def principal_for_digest(
    *, digest: str, before_lookup: Callable[[], None] | None = None
) -> Principal | None:
    """principal_for_token for a token known by its digest (an open stream keeps no token)."""
    cached = cache.cached_principal(digest)
    if cached is not None:
        principal = Principal.decode(cached)
        return None if principal.expired() else principal
    if before_lookup is not None:
        before_lookup()
    if cache.token_known_invalid(digest):
        return None
    return principal_load(digest=digest)


def principal_for_authorization(
    header: str | bytes | None, *, before_lookup: Callable[[], None] | None = None
) -> Principal | None:
    """The principal of an `Authorization: Token <token>` header; None when the header is
    absent or another scheme. Raises InvalidCredentials for a malformed header or an unknown,
    expired or revoked token. `before_lookup`: as principal_for_token's."""
    token = token_from_authorization(header)
    if token is None:
        return None
    if token == "":
        raise InvalidCredentials(MALFORMED_AUTHORIZATION)
    principal = principal_for_token(token=token, before_lookup=before_lookup)
    if principal is None:
        raise InvalidCredentials(INVALID_TOKEN)
    return principal


def principal_for_request(request) -> Principal | None:
    """Who a plain Django request (not DRF's) comes from: its `Authorization: Token` header's
    principal, else its session account's; None for an anonymous client. Raises
    InvalidCredentials as principal_for_authorization does, as the API does."""
    principal = principal_for_authorization(request.META.get("HTTP_AUTHORIZATION"))
    if principal is None:  # no token header: the session's account, if any
        return principal_for_account(getattr(request, "user", None))
    return principal


def principal_for_session(*, session_key: str) -> Principal | None:
    """The principal of a session's account now; None once the session has ended (logged out,
    expired, its password changed) or the account is inactive. Django's own check, so a
    session counts here exactly when it would authenticate a request."""
    from django.contrib.auth import get_user

    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    return principal_for_account(get_user(SimpleNamespace(session=store)))


def principal_load(*, digest: str) -> Principal | None:
    """A token's principal from PostgreSQL, cached for settings.API_TOKEN_CACHE_SECONDS (never
    past the token's expiry); a refused token is remembered as refused for
    settings.API_INVALID_TOKEN_CACHE_SECONDS."""
    principal = _token_principal(digest)
    if principal is None:
        cache.remember_invalid_token(digest, ttl=float(settings.API_INVALID_TOKEN_CACHE_SECONDS))
        return None
    ttl = float(settings.API_TOKEN_CACHE_SECONDS)
    if principal.expires_at is not None:
        ttl = min(ttl, principal.expires_at - time.time())
    cache.cache_principal(digest, principal.encode(), ttl=ttl)
    return principal


def _token_principal(digest: str) -> Principal | None:
    token = ApiToken.objects.select_related("account").filter(digest=digest).first()
    if token is None:
        return None
    account_principal = principal_for_account(token.account)
    if account_principal is None:
        return None
    expires_at = float(int(token.expires_at.timestamp())) if token.expires_at else None
    principal = account_principal._replace(expires_at=expires_at)
    return None if principal.expired() else principal


def api_token_find(*, token: str, account_name: str) -> ApiToken | None:
    """The stored token of this account that `token` is, if it is one and still valid."""
    digest = token_digest(token)
    if digest is None:
        return None
    found = ApiToken.objects.filter(digest=digest, account__username=account_name).first()
    if found is None or principal_load(digest=digest) is None:  # expired, or account inactive
        return None
    return found


def stale_cache_entry_count() -> int:
    """Users whose Redis entries await repair after an outage (services.cache_repair_stale)."""
    return StaleCacheEntry.objects.count()


# Above this many rows (by the planner's statistics) the users are counted from those statistics
# rather than by a full count, which would scan the table on every anonymous page view.
EXACT_COUNT_LIMIT = 100_000


def user_count() -> tuple[int, bool]:
    """How many users there are, and whether that is exact (small tables) or an estimate."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [User._meta.db_table]
        )
        row = cursor.fetchone()
    estimate = row[0] if row else -1
    if estimate < EXACT_COUNT_LIMIT:  # -1: never analysed (a fresh table)
        return User.objects.count(), True
    return estimate, False


def user_list_newest(*, limit: int, using: str = DEFAULT_DB_ALIAS) -> list[dict[str, Any]]:
    """The `limit` most recently created users, newest first, as payloads (`using`: as for
    user_list)."""
    users = User.objects.using(using).order_by("-created_at", "-id")[:limit]
    return [user_payload(user) for user in users]
