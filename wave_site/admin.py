"""Building blocks of every app's admin: read-only records, filters that never 500, compact list columns.

Registers nothing itself; requests_app and credentials build their pages from these.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import EmptyResultSet, FullResultSet
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.safestring import SafeString


class BoundedDateChangeList(ChangeList):
    """Malformed filters are refused as Django refuses any, with a redirect to `?e=1`, also those Django lets
    through to the database or the page (a 500): a huge year, month or day (an OverflowError, or a ValueError
    once the query is compiled, in a date hierarchy or a plain `created_at__year=` lookup), a NUL character
    (Postgres refuses it in text: a DataError)."""

    def get_filters(self, request: HttpRequest) -> Any:
        if any("\x00" in value for values in request.GET.lists() for value in values[1]):
            raise IncorrectLookupParameters("a NUL character in the query string")
        try:
            return super().get_filters(request)
        except (OverflowError, ValueError) as exc:  # ValueError: a drill-down's year 9999 ends in year 10000
            raise IncorrectLookupParameters(exc) from exc

    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet[Any]:
        queryset: QuerySet[Any] = super().get_queryset(request, exclude_parameters)
        try:
            queryset.query.sql_with_params()  # compiled, not run: date parts become bounds here
        except (EmptyResultSet, FullResultSet):
            pass  # a query Django answers without asking the database (an id beyond its column's range)
        except (OverflowError, ValueError) as exc:
            raise IncorrectLookupParameters(exc) from exc
        return queryset


def is_valid_pk(value: str) -> bool:
    """A selected row's id as a form may send it: digits within the range of the id column."""
    return value.isascii() and value.isdigit() and 0 < int(value) < 2**63


class BoundedAdmin(admin.ModelAdmin):
    """Lists whose malformed filters and action selections are refused with a message, never a 500."""

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return BoundedDateChangeList

    def response_action(
        self, request: HttpRequest, queryset: QuerySet[Any], *args: Any, **kwargs: Any
    ) -> HttpResponse | None:
        """An action on rows named by anything but an id is refused with a message, not a 500."""
        if not all(is_valid_pk(value) for value in request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)):
            self.message_user(request, "No action taken: the selection is not a list of row ids.", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())
        return super().response_action(request, queryset, *args, **kwargs)


class ReadOnlyAdmin(BoundedAdmin):
    """Records the service writes: viewable, never added or edited by hand (so no Save buttons)."""

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # the service purges its records itself (a token is ended by revoking it)


def truncated(text: str, css_class: str = "wave-truncate") -> SafeString:
    """Long names cut to their column by CSS (templates/admin/base_site.html); the whole name on hover."""
    return format_html('<span class="{}" title="{}">{}</span>', css_class, text, text)


def short_time(moment: dt.datetime) -> str:
    """`2026-12-01 14:48` in the site's time zone: a list column, not a sentence."""
    return date_format(timezone.localtime(moment), "Y-m-d H:i")
