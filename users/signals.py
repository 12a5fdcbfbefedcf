"""Keeps the cached token principals (users.access) and the open streams (users.stream) in step
with changes made outside our services: accounts and groups edited in the admin, tokens changed
or deleted there, sessions ended. Each change drops the affected principals after commit and
tells every web process, whose streams of those accounts check their client again at once;
entries also expire, and streams check again, within API_TOKEN_CACHE_SECONDS, which bounds
anything missed here (a group's membership cleared wholesale, sessions expiring, say)."""

from __future__ import annotations

from functools import partial

from django.contrib.auth import SESSION_KEY, get_user_model
from django.contrib.auth.models import Group
from django.contrib.sessions.models import Session
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save

from users.models import ApiToken


def _forget_accounts(account_ids) -> None:
    from users.services import principals_forget

    account_ids = list(account_ids)
    if account_ids:
        transaction.on_commit(partial(principals_forget, account_ids=account_ids))


def _token_changed(sender, instance: ApiToken, created: bool = False, **kwargs) -> None:
    """A token deleted, or saved (its expiry changed in the admin, say): its cached principal
    goes and its account's open streams check their client again, so the change holds at once
    rather than after API_TOKEN_CACHE_SECONDS."""
    if created:  # a new token has nothing cached and no stream yet
        return
    from users.services import token_principals_forget

    transaction.on_commit(
        partial(
            token_principals_forget, digests=[instance.digest], account_ids=[instance.account_id]
        )
    )


def _session_deleted(sender, instance, **kwargs) -> None:
    """A database session deleted (a logout, a login's new key, the admin): the streams it
    opened end (users.stream.clients checks the session again; it is gone by then, after commit)."""
    from users.services import sessions_ended

    try:
        account_id = int(instance.get_decoded().get(SESSION_KEY))
    except (TypeError, ValueError):  # an anonymous session, or one that no longer decodes
        return
    transaction.on_commit(partial(sessions_ended, account_ids=[account_id]))


def _account_saved(sender, instance, created: bool, update_fields=None, **kwargs) -> None:
    if created or update_fields == frozenset({"last_login"}):  # a login changes no permission
        return
    _forget_accounts([instance.pk])  # is_active or is_superuser may have changed


def _account_permissions_changed(sender, instance, action: str, reverse: bool, pk_set, **kwargs):
    """An account's groups or permissions changed, from either side."""
    if not action.startswith("post_"):
        return
    if isinstance(instance, get_user_model()):
        _forget_accounts([instance.pk])
    elif isinstance(instance, Group):
        _forget_accounts(pk_set or instance.user_set.values_list("pk", flat=True))


def _group_permissions_changed(sender, instance, action: str, pk_set, **kwargs) -> None:
    if not action.startswith("post_"):
        return
    groups = [instance.pk] if isinstance(instance, Group) else list(pk_set or ())
    Account = get_user_model()  # the auth user model, not the directory's users.models.User
    _forget_accounts(Account.objects.filter(groups__in=groups).values_list("pk", flat=True))


def connect() -> None:
    Account = get_user_model()  # the auth user model, not the directory's users.models.User
    post_delete.connect(_token_changed, sender=ApiToken, dispatch_uid="users-token-deleted")
    post_save.connect(_token_changed, sender=ApiToken, dispatch_uid="users-token-saved")
    post_delete.connect(_session_deleted, sender=Session, dispatch_uid="users-session-deleted")
    post_save.connect(_account_saved, sender=Account, dispatch_uid="users-account-saved")
    m2m_changed.connect(
        _account_permissions_changed, sender=Account.groups.through, dispatch_uid="users-groups"
    )
    m2m_changed.connect(
        _account_permissions_changed,
        sender=Account.user_permissions.through,
        dispatch_uid="users-account-perms",
    )
    m2m_changed.connect(
        _group_permissions_changed,
        sender=Group.permissions.through,
        dispatch_uid="users-group-perms",
    )
