"""Admin for users. Saves and deletes go through users.services, so the cache is refreshed and
the change reaches the SSE stream exactly as for API writes.

Every page of the users list stays bounded whatever the table's size: the search box is the
API's substring search (users.selectors.user_search, on the trigram indexes), counts stop at
EXACT_COUNT_UP_TO and give the planner's estimate beyond, pages stop at MAX_PAGES, columns
sort only where an index serves the order, the date drill-down reads two ends of an index
(users/templatetags/users_admin.py) and each page's queries run under API_QUERY_TIMEOUT_MS.
"""

import logging
import math
from functools import cached_property

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.template.response import TemplateResponse
from django.utils.html import format_html
from django.utils.translation import gettext as _

from users import selectors
from users.access import may_import
from users.columns import USER_COLUMNS
from users.consistency import request_read_alias
from users.models import ApiToken, User
from users.services import user_create, user_delete, user_update
from viswals.db_router import read_with_fallback

logger = logging.getLogger(__name__)

# Every column but the id, which the API assigns (users.columns).
EDITABLE = [name for name in USER_COLUMNS if name != "id"]
# In the list, times take less room: a short date, or yes/no for deleted and merged.
_LIST_COLUMNS = {"created_at": "created", "deleted_at": "deleted", "merged_at": "merged"}


class _IsSetFilter(admin.SimpleListFilter):
    """Yes/no on whether a nullable timestamp is set (deleted_at, merged_at)."""

    field: str

    def lookups(self, request, model_admin):
        return [("yes", self.title.capitalize()), ("no", f"Not {self.title}")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(**{f"{self.field}__isnull": self.value() == "no"})
        return queryset


class DeletedFilter(_IsSetFilter):
    title = parameter_name = "deleted"
    field = "deleted_at"


class MergedFilter(_IsSetFilter):
    title = parameter_name = "merged"
    field = "merged_at"


# Up to this many matches a list's count is exact (a count that stops there); beyond, it is the
# planner's estimate. Pages stop at MAX_PAGES (an OFFSET of at most 10,000 rows): deeper than
# that, a search or a filter finds a user sooner than paging does.
EXACT_COUNT_UP_TO = 1000
MAX_PAGES = 200


class BoundedCountPaginator(Paginator):
    """A paginator whose count reads at most EXACT_COUNT_UP_TO + 1 rows (then estimates) and
    whose pages stop at MAX_PAGES. The count is exact wherever the admin decides something by
    it (one page or several, "show all" up to list_max_show_all)."""

    # An email search's matches, when it has at most EXACT_COUNT_UP_TO candidates: counted and
    # listed by these ids (primary-key reads), not by running the search again.
    match_ids: list[int] | None = None

    @cached_property
    def count(self) -> int:
        text = selectors.email_recheck_text(self.object_list)
        if text is not None:  # candidates of an email search: only the checked ones count
            self.match_ids = selectors.user_matches_ids(
                queryset=self.object_list, text=text, up_to=EXACT_COUNT_UP_TO
            )
            if self.match_ids is not None:
                return len(self.match_ids)
            return selectors.user_count_estimate(
                queryset=self.object_list.order_by(), at_least=EXACT_COUNT_UP_TO + 1
            )
        count, _ = selectors.user_count_bounded(
            queryset=self.object_list, exact_up_to=EXACT_COUNT_UP_TO
        )
        return count

    def matches(self):
        """The list narrowed to the matches counted (match_ids), in its order."""
        return self.object_list.filter(id__in=self.match_ids)

    def page(self, number):
        text = selectors.email_recheck_text(self.object_list)
        if text is None:
            return super().page(number)
        # Candidates of an email search: the page's rows among the checked ones, in order.
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        top = bottom + self.per_page
        if self.match_ids is not None:
            return self._get_page(list(self.matches()[bottom:top]), number, self)
        found, _, _ = selectors.user_rows_rechecked(
            queryset=self.object_list, text=text, wanted=top, scan_limit=top * 4 + 1000
        )
        return self._get_page(found[bottom:top], number, self)

    @cached_property
    def num_pages(self) -> int:
        if self.count == 0 and not self.allow_empty_first_page:
            return 0
        hits = max(1, self.count - self.orphans)
        return min(math.ceil(hits / self.per_page), MAX_PAGES)


# The users list's own query parameters: what a timeout's log line may name (never values).
_LIST_PARAMETERS = frozenset(
    {"q", "o", "p", "all", "deleted", "merged"}
    | {f"created_at__{part}" for part in ("year", "month", "day")}
)


def _descending(term) -> bool:
    return term.startswith("-") if isinstance(term, str) else getattr(term, "descending", False)


class UserChangeList(ChangeList):
    """Sorting only by the columns in `sortable_by` (Django sorts by any column index in `o`,
    whatever the headers offer), last names by the index's key, and ties broken by id in the
    sort's own direction (Django adds `-pk` whatever it is, which no index serves with an
    ascending first key)."""

    def get_ordering_field(self, field_name):
        if self.sortable_by is not None and field_name not in self.sortable_by:
            return None
        if field_name == "last_name":
            return selectors.user_ordering_key("last_name")
        return super().get_ordering_field(field_name)

    def get_results(self, request):
        super().get_results(request)
        # Django lists a list that fits one page, or "show all", without the paginator: email
        # candidates are checked there too (BoundedCountPaginator.page checks the others).
        text = selectors.email_recheck_text(self.queryset)
        if text is not None and not isinstance(self.result_list, list):
            if self.paginator.match_ids is not None:
                self.result_list = list(self.paginator.matches())
                return
            wanted = self.list_max_show_all
            self.result_list, _, _ = selectors.user_rows_rechecked(
                queryset=self.queryset, text=text, wanted=wanted, scan_limit=wanted * 4 + 1000
            )

    def _get_deterministic_ordering(self, ordering):
        ordering = super()._get_deterministic_ordering(ordering)
        if ordering == ["-pk"]:  # no sortable column asked for: the list's own order
            return ["pk"]
        if len(ordering) > 1 and ordering[-1] == "-pk" and not _descending(ordering[0]):
            ordering[-1] = "pk"
        return ordering


@admin.register(User)
class UserAdmin(admin.ModelAdmin):
    # Narrow columns (yes/no for deleted and merged, their times on the user's page) so the
    # list fits a 1400 px window beside the filters.
    list_display = [_LIST_COLUMNS.get(name, name) for name in USER_COLUMNS]
    # Searched by get_search_results (users.selectors.user_search); listed here so that
    # Django shows the search box.
    search_fields = ["first_name", "last_name", "email_address"]
    search_help_text = (
        'A part of the name ("first last") or of the email address, at least '
        f"{selectors.SEARCH_MIN_RUN} letters or digits in a row."
    )
    list_filter = [DeletedFilter, MergedFilter]
    # Drilled down by users_admin.users_date_hierarchy (the change_list template), which never
    # counts distinct dates over the table as Django's own tag does.
    date_hierarchy = "created_at"
    # The columns an index orders (users.models): the others would sort the whole table.
    sortable_by = ["id", "last_name", "created", "parent_user_id"]
    fields = ["id", *EDITABLE]
    readonly_fields = ["id"]
    show_full_result_count = False  # counting 500k rows on every page load is wasted work
    paginator = BoundedCountPaginator
    list_per_page = 50
    change_list_template = "admin/users/user/change_list.html"

    def action_checkbox(self, obj):
        # Django's own renders a form widget through the template engine, about 0.3 ms a row:
        # most of what a page of users costs to render. The same HTML, written directly
        # (tests/users/test_admin.py compares the two).
        label = format_html(_("Select this object for an action - {}"), str(obj))
        return format_html(
            '<input type="checkbox" name="{}" value="{}" class="action-select" aria-label="{}">',
            ACTION_CHECKBOX_NAME,
            obj.pk,
            label,
        )

    @admin.display(description="created", ordering="created_at")
    def created(self, user: User) -> str:
        return user.created_at.strftime("%Y-%m-%d %H:%M")

    @admin.display(description="deleted", boolean=True, ordering="deleted_at")
    def deleted(self, user: User) -> bool:
        return user.is_deleted

    @admin.display(description="merged", boolean=True, ordering="merged_at")
    def merged(self, user: User) -> bool:
        return user.is_merged

    def get_changelist(self, request, **kwargs):
        return UserChangeList

    def get_ordering(self, request):
        # A period of the date drill-down lists newest first, along the created_at index: in
        # id order PostgreSQL would walk every user created before the period to reach it (ids
        # and creation times grow together, which the planner does not know), 3M rows for
        # 2022 at 5M users. Not under a column's sort (`o`): there it would follow the column
        # as a tie-break, which no index holds after UPPER(last_name) (PostgreSQL then sorted
        # every user of the first last name, 23k at 5M users, for a page of 2022).
        drilled = any(name.startswith("created_at__") for name in request.GET)
        if drilled and "o" not in request.GET:
            return ["-created_at", "-id"]
        return super().get_ordering(request)

    def get_search_results(self, request, queryset, search_term):
        text = search_term.strip()
        if not text:
            return queryset, False
        if not selectors.search_text_usable(text):
            messages.warning(request, f"Search: {selectors.SEARCH_TOO_SHORT}")
            return queryset.none(), False
        found = selectors.user_search(text=text, queryset=queryset, page=self.list_per_page)
        return found, False

    def changelist_view(self, request, extra_context=None):
        context = {**(extra_context or {}), "can_import": may_import(request.user)}
        if request.method != "GET":  # actions (deletes): writes, rows picked on the primary
            return super().changelist_view(request, context)
        try:
            return read_with_fallback(
                lambda database: self._changelist_from(request, context, database),
                request_read_alias(request),
            )
        except selectors.QueryTimeout:
            logger.warning(
                "admin: users list cancelled after %s ms; parameters: %s",
                settings.API_QUERY_TIMEOUT_MS,
                ",".join(sorted(set(request.GET) & _LIST_PARAMETERS)) or "none",
            )
            response = TemplateResponse(
                request,
                "admin/users/user/query_timeout.html",
                {**self.admin_site.each_context(request), "opts": self.opts,
                 "timeout_ms": settings.API_QUERY_TIMEOUT_MS},
                status=503,
            )  # fmt: skip
            response._has_been_logged = True  # the line above (Django's would name no shape)
            return response

    def _changelist_from(self, request, context, database: str):
        """The list page read from `database` (a replica when one may serve this account,
        users.consistency), under the read bound; rendered here, so that its queries (they
        run while the template renders) are bounded and a failing replica falls back in time."""
        request.users_read_database = database
        with selectors.bounded_read(using=database):
            response = super().changelist_view(request, context)
            return response.render() if hasattr(response, "render") else response

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        database = getattr(request, "users_read_database", None)
        return queryset.using(database) if database else queryset

    def save_model(self, request, obj, form, change):
        fields = {name: form.cleaned_data[name] for name in EDITABLE if name in form.cleaned_data}
        if change:
            user_update(user=obj, fields=fields)
        else:
            obj.id = user_create(**fields).id

    def delete_model(self, request, obj):
        user_delete(user_id=obj.id)

    def delete_queryset(self, request, queryset):
        for user_id in queryset.values_list("id", flat=True):
            user_delete(user_id=user_id)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are made by `manage.py create_api_client` and shown only then; here they can be
    seen by prefix and revoked (deleted). The digest is never shown."""

    list_display = ["prefix", "account", "label", "created_at", "expires_at"]
    list_filter = ["account"]
    search_fields = ["account__username", "prefix"]
    fields = ["prefix", "account", "label", "created_at", "expires_at"]
    readonly_fields = ["prefix", "account", "created_at"]
    actions = ["delete_selected"]

    def has_add_permission(self, request) -> bool:
        return False
