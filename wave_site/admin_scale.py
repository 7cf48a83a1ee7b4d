"""Admin lists that stay fast at millions of rows (issue 14): no COUNT(*) over a whole table, a date drill-down
and distinct-value filters answered by index probes instead of scans.

`LargeTableAdmin` puts them together; each piece assumes the columns it reads are indexed.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Field, Max, Min, Model, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.functional import cached_property

from wave_site.admin import BoundedDateChangeList, ReadOnlyAdmin

# Lists count exactly up to this many rows; past it, Postgres' planner estimates.
EXACT_COUNT_LIMIT = 10_000


def planner_rows(queryset: QuerySet[Any]) -> int:
    """The rows Postgres' planner expects `queryset` to return (EXPLAIN; from pg_class.reltuples and statistics)."""
    sql, params = queryset.order_by().query.sql_with_params()
    with connections[queryset.db].cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


class EstimatedCountPaginator(Paginator):
    """Counts exactly up to `exact_count_limit` rows (a COUNT over a LIMIT); past that, the planner's estimate
    on Postgres (the page numbers are then approximate), an exact count elsewhere (SQLite, small sites)."""

    exact_count_limit = EXACT_COUNT_LIMIT

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet):
            return int(super().count)
        counted = queryset.order_by()[: self.exact_count_limit + 1].count()
        if counted <= self.exact_count_limit:
            return counted
        if connections[queryset.db].vendor != "postgresql":
            return int(super().count)
        return max(planner_rows(queryset), self.exact_count_limit + 1)


def period_start(moment: dt.datetime, kind: str) -> dt.datetime:
    day = moment.date().replace(month=1, day=1) if kind == "year" else moment.date()
    if kind == "month":
        day = day.replace(day=1)
    return dt.datetime.combine(day, dt.time(), tzinfo=moment.tzinfo)


def period_after(start: dt.datetime, kind: str) -> dt.datetime:
    day = start.date()
    if kind == "year":
        day = day.replace(year=day.year + 1)
    elif kind == "month":
        day = day.replace(year=day.year + day.month // 12, month=day.month % 12 + 1)
    else:
        day += dt.timedelta(days=1)
    return dt.datetime.combine(day, dt.time(), tzinfo=start.tzinfo)


class IndexedDatesQuerySet(QuerySet[Any]):
    """A changelist's rows whose date drill-down (Django's `date_hierarchy` tag: the first and last date, then
    the years, months or days) reads no more than the page does.

    A small list (counted exactly) reads its days once (a DISTINCT over its few rows) and answers from them. A
    large one answers from the whole table, within the period chosen: the first and last value and an EXISTS per
    period, each a probe of the date's index (the periods listed are those with rows, not necessarily rows that
    match the filters)."""

    drill_down_exact = True
    drill_down_range: tuple[dt.datetime, dt.datetime] | None = None

    def _clone(self) -> IndexedDatesQuerySet:
        clone: IndexedDatesQuerySet = super()._clone()  # type: ignore[misc]
        clone.drill_down_exact, clone.drill_down_range = self.drill_down_exact, self.drill_down_range
        return clone

    @cached_property
    def _days(self) -> dict[str, list[dt.datetime]]:
        return {}

    def _values_of(self, field_name: str) -> list[dt.datetime]:
        """The days (in the site's time zone) with rows, in order."""
        if field_name not in self._days:
            zone = timezone.get_current_timezone()
            self._days[field_name] = list(super().datetimes(field_name, "day", tzinfo=zone))
        return self._days[field_name]

    def _table(self, field_name: str, within: tuple[dt.datetime, dt.datetime] | None) -> QuerySet[Any]:
        rows: QuerySet[Any] = self.model._default_manager.all()
        if within is not None:
            rows = rows.filter(**{f"{field_name}__gte": within[0], f"{field_name}__lt": within[1]})
        return rows

    def _bounds(self, field_name: str, within: tuple[dt.datetime, dt.datetime] | None) -> tuple[Any, Any]:
        if self.drill_down_exact:
            values = self._values_of(field_name)
            return (min(values), max(values)) if values else (None, None)
        rows = self._table(field_name, within).values_list(field_name, flat=True)
        return rows.order_by(field_name).first(), rows.order_by(f"-{field_name}").first()

    def aggregate(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        first, last = kwargs.get("first"), kwargs.get("last")
        is_drill_down = (
            not args and set(kwargs) == {"first", "last"} and isinstance(first, Min) and isinstance(last, Max)
        )
        if not is_drill_down:
            return super().aggregate(*args, **kwargs)
        field_name = first.source_expressions[0].name  # type: ignore[union-attr]
        bounds = self._bounds(field_name, None)
        return {"first": bounds[0], "last": bounds[1]}

    def datetimes(  # type: ignore[override]
        self, field_name: str, kind: str, order: str = "ASC", tzinfo: dt.tzinfo | None = None, is_dst: Any = None
    ) -> list[dt.datetime]:
        if kind not in ("year", "month", "day"):
            return list(super().datetimes(field_name, kind, order, tzinfo))  # type: ignore[arg-type]
        zone = tzinfo or timezone.get_current_timezone()
        if self.drill_down_exact:
            found = {period_start(value.astimezone(zone), kind) for value in self._values_of(field_name)}
            return sorted(found, reverse=order == "DESC")
        first, last = self._bounds(field_name, self.drill_down_range)
        if first is None:
            return []
        start, last = period_start(first.astimezone(zone), kind), last.astimezone(zone)
        rows = self._table(field_name, None)
        periods = []
        while start <= last:
            end = period_after(start, kind)
            if rows.filter(**{f"{field_name}__gte": start, f"{field_name}__lt": end}).exists():
                periods.append(start)
            start = end
        return periods[::-1] if order == "DESC" else periods


class LargeTableChangeList(BoundedDateChangeList):
    """A changelist whose date drill-down reads no more than its page (IndexedDatesQuerySet)."""

    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet[Any]:
        queryset = super().get_queryset(request, exclude_parameters)
        if type(queryset) is QuerySet:  # a model's own QuerySet class keeps its methods (and the slow drill-down)
            queryset.__class__ = IndexedDatesQuerySet
        return queryset

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        if isinstance(self.queryset, IndexedDatesQuerySet):
            limit = getattr(self.paginator, "exact_count_limit", EXACT_COUNT_LIMIT)
            self.queryset.drill_down_exact = self.result_count <= limit
            self.queryset.drill_down_range = self.drill_down_range()

    def drill_down_range(self) -> tuple[dt.datetime, dt.datetime] | None:
        """The year, month or day chosen in the date drill-down, as [start, end) in the site's time zone."""
        field = self.date_hierarchy
        if not field:
            return None
        try:
            year, month, day = (int(self.params.get(f"{field}__{part}", 0)) for part in ("year", "month", "day"))
            if not year:
                return None
            start = dt.datetime(year, month or 1, day or 1, tzinfo=timezone.get_current_timezone())
        except (TypeError, ValueError, OverflowError):
            return None
        return start, period_after(start, "day" if day else "month" if month else "year")


class IndexedValuesFilter(admin.AllValuesFieldListFilter):
    """A filter by the distinct values of an indexed column, found by a loose index scan (the next value after
    the last one, one index probe per distinct value) instead of a SELECT DISTINCT over the whole table."""

    def __init__(
        self, field: Field[Any, Any], request: HttpRequest, params: dict[str, list[str]], model: type[Model],
        model_admin: admin.ModelAdmin[Any], field_path: str,
    ) -> None:  # fmt: skip
        super().__init__(field, request, params, model, model_admin, field_path)
        self.lookup_choices = distinct_values(model, str(field.column))  # type: ignore[assignment]


def distinct_values(model: type[Model], column: str) -> list[Any]:
    """The distinct non-null values of an indexed column, in order (a recursive query: MIN after MIN)."""
    connection = connections[model._default_manager.db]
    table, name = connection.ops.quote_name(model._meta.db_table), connection.ops.quote_name(column)
    sql = (
        f"WITH RECURSIVE found(value) AS (SELECT MIN({name}) FROM {table} UNION ALL "  # noqa: S608 (quoted names)
        f"SELECT (SELECT MIN({name}) FROM {table} WHERE {name} > found.value) FROM found "
        f"WHERE found.value IS NOT NULL) SELECT value FROM found WHERE value IS NOT NULL"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return [row[0] for row in cursor.fetchall()]


class LargeTableAdmin(ReadOnlyAdmin):
    """Read-only records in tables of millions of rows: no full count (estimated past EXACT_COUNT_LIMIT), the
    date drill-down by index probes. Search fields should be exact lookups or indexed patterns."""

    show_full_result_count = False
    paginator = EstimatedCountPaginator

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return LargeTableChangeList
