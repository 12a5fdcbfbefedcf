from django.apps import AppConfig


class UsersConfig(AppConfig):
    name = "users"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from users import signals

        signals.connect()
        post_migrate.connect(_ensure_roles, sender=self, dispatch_uid="users-roles")


def _ensure_roles(**kwargs) -> None:
    from users.services import roles_ensure

    roles_ensure()
