"""The browsable API, with a template of ours (users/templates/users/browsable_api.html): its
401 and 403 pages say how to log in, or why the account logged in may not do this, and how
programs authenticate instead. DRF's template is found before ours (rest_framework comes first
in INSTALLED_APPS), so the renderer names its own; JSON clients get the same bodies as ever."""

from rest_framework.renderers import BrowsableAPIRenderer


class UsersBrowsableAPIRenderer(BrowsableAPIRenderer):
    template = "users/browsable_api.html"
