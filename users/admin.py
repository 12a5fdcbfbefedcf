"""Admin for users. Saves and deletes go through users.services, so the cache is refreshed and
the change reaches the SSE stream exactly as for API writes."""

from django.contrib import admin

from users.columns import USER_COLUMNS
from users.consistency import request_read_alias
from users.models import ApiToken, User
from users.services import user_create, user_delete, user_update
from viswals.db_router import read_with_fallback

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


@admin.register(User)
class UserAdmin(admin.ModelAdmin):
    # Narrow columns (yes/no for deleted and merged, their times on the user's page) so the
    # list fits a 1400 px window beside the filters.
    list_display = [_LIST_COLUMNS.get(name, name) for name in USER_COLUMNS]
    search_fields = ["first_name", "last_name", "email_address"]
    list_filter = [DeletedFilter, MergedFilter]
    date_hierarchy = "created_at"
    fields = ["id", *EDITABLE]
    readonly_fields = ["id"]
    show_full_result_count = False  # counting 500k rows on every page load is wasted work
    list_per_page = 50
    change_list_template = "admin/users/user/change_list.html"

    @admin.display(description="created", ordering="created_at")
    def created(self, user: User) -> str:
        return user.created_at.strftime("%Y-%m-%d %H:%M")

    @admin.display(description="deleted", boolean=True, ordering="deleted_at")
    def deleted(self, user: User) -> bool:
        return user.is_deleted

    @admin.display(description="merged", boolean=True, ordering="merged_at")
    def merged(self, user: User) -> bool:
        return user.is_merged

    def changelist_view(self, request, extra_context=None):
        from ingest.admin import can_import

        extra_context = {**(extra_context or {}), "can_import": can_import(request)}
        if request.method != "GET":  # actions (deletes) pick their rows on the primary
            return super().changelist_view(request, extra_context)
        return self._stale_tolerant_changelist(request, extra_context)

    def _stale_tolerant_changelist(self, request, extra_context):
        """The list page, read from a replica when one may serve this account
        (users.consistency); rendered here, so a replica that fails falls back in time."""

        def render_from(database: str):
            request.users_read_database = database
            response = super(UserAdmin, self).changelist_view(request, extra_context)
            return response.render() if hasattr(response, "render") else response

        return read_with_fallback(render_from, request_read_alias(request))

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
