"""The `reader` and `writer` groups, and DRF's plain-text tokens (rest_framework.authtoken, no
longer installed) moved over as digests, then their table dropped: an existing token keeps
working, and no database dump shows one again."""

import hashlib

from django.db import migrations


ROLES = {"reader": ["view_user"], "writer": ["view_user", "add_user", "delete_user"]}


def create_roles(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    # Permissions are made after migrations by default; the groups need them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.set(
            Permission.objects.filter(content_type__app_label="users", codename__in=codenames)
        )


def move_drf_tokens(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('authtoken_token') IS NOT NULL")
        if not cursor.fetchone()[0]:
            return
        cursor.execute("SELECT key, user_id, created FROM authtoken_token")
        rows = cursor.fetchall()
        ApiToken = apps.get_model("users", "ApiToken")
        ApiToken.objects.bulk_create(
            ApiToken(
                account_id=user_id,
                digest=hashlib.sha256(key.encode()).hexdigest(),
                prefix=key[:10],
                label="moved from the former DRF token",
            )
            for key, user_id, created in rows
        )
        cursor.execute("DROP TABLE authtoken_token")


class Migration(migrations.Migration):
    dependencies = [
        ("users", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.RunPython(create_roles, migrations.RunPython.noop),
        migrations.RunPython(move_drf_tokens, migrations.RunPython.noop),
    ]
