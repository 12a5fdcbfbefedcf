"""The project's admin site: django.contrib.admin's, with the apps in the order an operator
needs them and one entry called "Users" (the people the service stores; Django's own login
accounts are listed as "Staff accounts")."""

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig as DjangoAdminConfig

APP_ORDER = {"users": 0, "ingest": 1, "auth": 2}


class AdminSite(admin.AdminSite):
    site_header = "viswals administration"
    site_title = "viswals admin"
    index_title = "Users, imports and staff accounts"
    # The navigation sidebar repeats the index beside every page and takes a quarter of a
    # 1400 px window from the lists; the breadcrumbs and the index lead everywhere it does.
    enable_nav_sidebar = False

    def get_app_list(self, request, app_label=None):
        apps = super().get_app_list(request, app_label)
        for app in apps:
            if app["app_label"] == "auth":
                app["name"] = "Staff accounts and groups"
                for model in app["models"]:
                    if model["object_name"] == "User":
                        model["name"] = "Staff accounts"
        apps.sort(key=lambda app: APP_ORDER.get(app["app_label"], len(APP_ORDER)))
        return apps


class AdminConfig(DjangoAdminConfig):
    """Installed in place of "django.contrib.admin" (Django's documented way to replace the
    default site)."""

    default_site = "viswals.admin_site.AdminSite"
