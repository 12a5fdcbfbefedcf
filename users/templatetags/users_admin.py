"""Template tags of the users admin.

`users_date_hierarchy`: the drill-down by creation date of the users list, in place of Django's
`date_hierarchy` tag, which finds the years (months, days) that hold users with a SELECT
DISTINCT over every matching row: the whole table on the plain list, 5 million rows at that
size. Here the years run from the oldest user's to the newest one's (two ends of the
created_at index) and a year offers its twelve months, a month its days, with no query at all;
one without users simply lists none. The links and the template are Django's own.
"""

from __future__ import annotations

import calendar
import datetime

from django import template
from django.contrib.admin.templatetags.base import InclusionAdminNode
from django.utils import formats
from django.utils.text import capfirst
from django.utils.translation import gettext as _

from users.selectors import user_created_years

register = template.Library()


def users_date_hierarchy(cl) -> dict:
    if not cl.date_hierarchy:
        return {"show": False}
    field = cl.date_hierarchy
    year_field, month_field, day_field = (f"{field}__{part}" for part in ("year", "month", "day"))

    def link(filters: dict) -> str:
        return cl.get_query_string(filters, [f"{field}__"])

    try:
        year = int(cl.params[year_field]) if cl.params.get(year_field) else None
        month = int(cl.params[month_field]) if cl.params.get(month_field) else None
        day = int(cl.params[day_field]) if cl.params.get(day_field) else None
        if year and month and day:
            date = datetime.date(year, month, day)
            return {
                "show": True,
                "back": {
                    "link": link({year_field: year, month_field: month}),
                    "title": capfirst(formats.date_format(date, "YEAR_MONTH_FORMAT")),
                },
                "choices": [{"title": capfirst(formats.date_format(date, "MONTH_DAY_FORMAT"))}],
            }
        if year and month:
            days = calendar.monthrange(year, month)[1]
            return {
                "show": True,
                "back": {"link": link({year_field: year}), "title": str(year)},
                "choices": [
                    {
                        "link": link({year_field: year, month_field: month, day_field: day}),
                        "title": capfirst(
                            formats.date_format(datetime.date(year, month, day), "MONTH_DAY_FORMAT")
                        ),
                    }
                    for day in range(1, days + 1)
                ],
            }
        if year:
            return {
                "show": True,
                "back": {"link": link({}), "title": _("All dates")},
                "choices": [
                    {
                        "link": link({year_field: year, month_field: month}),
                        "title": capfirst(
                            formats.date_format(datetime.date(year, month, 1), "YEAR_MONTH_FORMAT")
                        ),
                    }
                    for month in range(1, 13)
                ],
            }
    except (ValueError, OverflowError):  # a date that does not exist: no drill-down offered
        return {"show": True, "back": {"link": link({}), "title": _("All dates")}, "choices": []}
    return {
        "show": True,
        "back": None,
        "choices": [
            {"link": link({year_field: str(year)}), "title": str(year)}
            for year in user_created_years()
        ],
    }


@register.tag(name="users_date_hierarchy")
def users_date_hierarchy_tag(parser, token):
    return InclusionAdminNode(
        parser,
        token,
        func=users_date_hierarchy,
        template_name="date_hierarchy.html",
        takes_context=False,
    )
