"""Operators' view of builds: find by build id, target or caller; read the log; cancel an active build, rebuild
a finished one (list actions, or the buttons of a build's page), each through builds.services.

Builds are written by the service only: the pages are read-only (no Save buttons). Cancelling and rebuilding
are gated by the change permission and recorded in the build's admin history (who did it stays there: the
public build page only says an operator cancelled it).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.views.decorators.http import require_POST

from builds.models import Build
from builds.selectors import build_log_tail, build_page_url
from builds.services import BuildActive, build_cancel, build_rebuild
from builds.views import page_duration
from wave_site.admin import short_time, truncated
from wave_site.admin_scale import IndexedValuesFilter, LargeTableAdmin, LargeTableChangeList

LOG_TAIL_BYTES = 200 * 1024
CANCELLED_BY = "an operator"
STATE_BADGE = '<span class="wave-build-state wave-build-state-{}">{}</span>'
# Large texts only the build's own page shows.
HEAVY_FIELDS = ("container_file", "conda_file", "spack_file", "conda_lock")


class BuildChangeList(LargeTableChangeList):
    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet[Any]:
        return super().get_queryset(request, exclude_parameters).defer(*HEAVY_FIELDS)


def build_ids(builds: list[Build]) -> str:
    return ", ".join(build.build_id for build in builds)


@admin.register(Build)
class BuildAdmin(LargeTableAdmin):
    list_display = ("build_id", "state_badge", "duration_shown", "target", "caller", "created")
    list_filter = ("state", "kind", ("platform", IndexedValuesFilter), "created_at")
    date_hierarchy = "created_at"
    # Each one indexed: exact values, the target's start on its pattern index, the user name's on its upper case.
    search_fields = ("build_id__exact", "container_id__exact", "target_image__startswith", "user_name__istartswith")
    search_help_text = (
        "A build id (bd-…_n, exact), a containerId (the tag of the image, exact), the start of the build "
        "repository's image name (case as stored), or the start of a user name."
    )
    actions = ["cancel", "rebuild"]
    list_per_page = 50
    change_form_template = "builds/admin/build_change_form.html"
    change_list_template = "builds/admin/build_change_list.html"
    readonly_fields = [*(field.name for field in Build._meta.fields), "duration_shown", "page", "log"]
    fieldsets = [
        (None, {"fields": ["build_id", "kind", "state", "page", "target_image", "source_image", "platform", "digest",
                           "exit_status", "failure_reason"]}),
        ("Timing", {"fields": ["created_at", "queued_at", "started_at", "heartbeat_at", "finished_at",
                               "duration_shown", "attempts", "claimed_by", "sent_at", "resends"]}),
        ("Inputs", {"fields": ["container_file", "conda_file", "spack_file", "context_digest", "container_id",
                               "number", "repository", "cache_repository"]}),
        ("Caller", {"fields": ["user_name", "user_email", "user_id", "client_ip", "tower_endpoint",
                               "tower_workspace_id", "tower_auth"]}),
        ("Log", {"fields": ["log_size", "log", "conda_lock"]}),
    ]  # fmt: skip

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return BuildChangeList

    # --- columns and fields ---

    @admin.display(description="state", ordering="state")
    def state_badge(self, obj: Build) -> SafeString:
        return format_html(STATE_BADGE, obj.state, obj.state)

    @admin.display(description="duration")
    def duration_shown(self, obj: Build) -> str:
        return page_duration(obj.duration) or "-"

    @admin.display(description="target", ordering="target_image")
    def target(self, obj: Build) -> SafeString:
        return truncated(obj.target_image)

    @admin.display(description="caller")
    def caller(self, obj: Build) -> SafeString:
        """The Tower user's name when one was identified, else the client's address."""
        return truncated(obj.user_name or obj.client_ip or "-", "wave-truncate wave-short")

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Build) -> str:
        return short_time(obj.created_at)

    @admin.display(description="build page")
    def page(self, obj: Build) -> SafeString:
        logs = reverse("build-logs", args=[obj.build_id])
        return format_html(
            '<a href="{}">{}</a> &middot; <a href="{}">whole log (text)</a>', build_page_url(obj.build_id),
            build_page_url(obj.build_id), logs,
        )  # fmt: skip

    @admin.display(description="log (the end)")
    def log(self, obj: Build) -> SafeString:
        text = build_log_tail(build=obj, max_bytes=LOG_TAIL_BYTES)
        return format_html('<pre class="wave-build-log">{}</pre>', text or "(no output yet)")

    # --- cancel and rebuild ---

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("builds.change_build"))

    def has_rebuild_permission(self, request: HttpRequest) -> bool:
        return self.has_cancel_permission(request)

    def cancel_builds(self, request: HttpRequest, builds: list[Build]) -> None:
        cancelled, finished = [], []
        for build in builds:
            if build_cancel(build=build, by=CANCELLED_BY):
                cancelled.append(build)
                self.log_change(request, build, "Cancelled the build.")
            else:
                finished.append(build)
        if cancelled:
            self.message_user(
                request, f"Cancelled {build_ids(cancelled)}: a running build is stopped by its worker within seconds.",
                messages.SUCCESS,
            )  # fmt: skip
        if finished:
            self.message_user(request, f"Not cancelled (already finished): {build_ids(finished)}.", messages.WARNING)

    def rebuild_builds(self, request: HttpRequest, builds: list[Build]) -> Build | None:
        """Rebuild each finished build; the last new build (for the page's button to show it)."""
        rebuilt: list[tuple[Build, Build]] = []
        refused: list[str] = []
        for build in builds:
            if build.is_active:
                refused.append(f"{build.build_id} is still {build.state}")
                continue
            if build.kind == Build.Kind.MIRROR:
                refused.append(f"{build.build_id} is a mirror (the next identical request copies it again)")
                continue
            try:
                new = build_rebuild(build=build)
            except BuildActive:
                refused.append(f"{build.build_id}: another build of {build.target_image} is pending or running")
                continue
            rebuilt.append((build, new))
            self.log_change(request, build, f"Rebuilt as {new.build_id}.")
        if rebuilt:
            started = ", ".join(f"{old.build_id} as {new.build_id}" for old, new in rebuilt)
            self.message_user(request, f"Rebuilding {started} (queued).", messages.SUCCESS)
        if refused:
            self.message_user(request, f"Not rebuilt: {'; '.join(refused)}.", messages.WARNING)
        return rebuilt[-1][1] if rebuilt else None

    @admin.action(description="Cancel the selected builds (pending or running)", permissions=["cancel"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[Build]) -> None:
        self.cancel_builds(request, list(queryset.defer(*HEAVY_FIELDS)))

    @admin.action(description="Rebuild the selected builds (finished ones)", permissions=["rebuild"])
    def rebuild(self, request: HttpRequest, queryset: QuerySet[Build]) -> None:
        self.rebuild_builds(request, list(queryset))

    # --- the build page's buttons ---

    def get_urls(self) -> list[URLPattern]:
        buttons = [
            path(f"<path:object_id>/{name}/", self.admin_site.admin_view(require_POST(view)),
                 name=f"builds_build_{name}")
            for name, view in (("cancel", self.cancel_view), ("rebuild", self.rebuild_view))
        ]  # fmt: skip
        return [*buttons, *super().get_urls()]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, object] | None = None
    ) -> HttpResponse:
        obj = self.get_object(request, unquote(object_id))
        allowed = obj is not None and self.has_cancel_permission(request)
        context = {
            **(extra_context or {}),
            "can_cancel": allowed and obj is not None and obj.is_active,
            "can_rebuild": allowed and obj is not None and not obj.is_active,
        }
        return super().change_view(request, object_id, form_url, context)

    def _button_target(self, request: HttpRequest, object_id: str) -> Build | None:
        if not self.has_cancel_permission(request):
            raise PermissionDenied
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            self.message_user(request, f"No build with ID {object_id!r}.", messages.WARNING)
        return obj

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponseRedirect:
        build = self._button_target(request, object_id)
        if build is None:
            return HttpResponseRedirect(reverse("admin:builds_build_changelist"))
        self.cancel_builds(request, [build])
        return HttpResponseRedirect(reverse("admin:builds_build_change", args=[build.pk]))

    def rebuild_view(self, request: HttpRequest, object_id: str) -> HttpResponseRedirect:
        build = self._button_target(request, object_id)
        if build is None:
            return HttpResponseRedirect(reverse("admin:builds_build_changelist"))
        new = self.rebuild_builds(request, [build])
        return HttpResponseRedirect(reverse("admin:builds_build_change", args=[(new or build).pk]))
