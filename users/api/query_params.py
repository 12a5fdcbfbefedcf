"""Unknown query parameters are refused, not ignored.

Django and DRF drop a query parameter nobody reads, so `GET /users?frist_name=Ann` (a misspelt
filter) answered every user as if no filter had been asked for. The users API answers 400
instead, naming the parameter and listing the ones the operation accepts: its filters (from the
filterset, whatever it declares), the paginator's, and DRF's `format`. Kept apart from the
filterset (users.filters) so that the filters can change without touching this rule.
"""

from __future__ import annotations

from django_filters.widgets import SuffixedMultiWidget
from rest_framework.exceptions import ValidationError
from rest_framework.settings import api_settings

# A client may send any number of parameters; the answer names at most this many of them.
MAX_NAMED = 10
MAX_NAME_CHARS = 100


def filterset_query_params(filterset_class) -> set[str]:
    """The query parameters a FilterSet reads: one per filter, or one per suffix for filters
    of two parts (a range's `<name>_min` and `<name>_max`)."""
    names: set[str] = set()
    for name, declared in filterset_class.base_filters.items():
        widget = declared.field.widget
        if isinstance(widget, SuffixedMultiWidget):
            names.update(widget.suffixed(name, suffix) for suffix in widget.suffixes)
        else:
            names.add(name)
    return names


class KnownQueryParamsOnly:
    """DRF view mixin: a request with a query parameter the view does not read is a 400 (after
    authentication, permission and throttling, so an anonymous client still gets its 401)."""

    def accepted_query_params(self) -> list[str]:
        names = {api_settings.URL_FORMAT_OVERRIDE} - {None}
        # The list's filters and pages, at the list's address, whatever the method: they mean
        # something to GET only, but the browsable API sends its POST and OPTIONS to the address
        # of the page it shows, query string and all (they are ignored there).
        if (self.lookup_url_kwarg or self.lookup_field) not in self.kwargs:
            filterset_class = getattr(self, "filterset_class", None)
            if filterset_class is not None:
                names |= filterset_query_params(filterset_class)
            paginator = self.paginator
            if paginator is not None:
                names |= {
                    getattr(paginator, attribute)
                    for attribute in ("cursor_query_param", "page_size_query_param")
                    if getattr(paginator, attribute, None)
                }
        return sorted(names)

    def initial(self, request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)
        if not request.query_params:
            return
        accepted = self.accepted_query_params()
        unknown = [name for name in request.query_params if name not in accepted]
        if unknown:
            message = (
                f"Unknown query parameter. Accepted: {', '.join(accepted)}."
                if accepted
                else "Unknown query parameter: this operation takes none."
            )
            named = unknown[:MAX_NAMED]
            raise ValidationError({name[:MAX_NAME_CHARS]: [message] for name in named})
