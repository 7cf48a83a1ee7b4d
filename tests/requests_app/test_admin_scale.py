"""The admin at scale (issue 14): searches on indexes, no COUNT(*) over a whole table, filters and the date
drill-down without scans; the pages still find the right rows."""

from __future__ import annotations

import datetime as dt
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.admin import site
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from builds.admin import BuildAdmin
from builds.models import Build
from requests_app.admin import ContainerRequestAdmin, InjectedLayerAdmin
from requests_app.models import ContainerRequest, GeneratedDocument, InjectedLayer, LayerDownload
from tests.builds.test_api import make_build
from wave_site.admin_scale import EstimatedCountPaginator, distinct_values

pytestmark = pytest.mark.django_db

REQUESTS = "/admin/requests_app/containerrequest/"
TABLE = '"requests_app_containerrequest"'
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def operator(client: Client) -> Client:
    get_user_model().objects.create_superuser("ops", password="ops-pass")
    client.login(username="ops", password="ops-pass")
    return client


@pytest.fixture
def small_exact_limit(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """Lists count exactly up to 10 rows: 30 rows are a 'large' table."""
    monkeypatch.setattr(EstimatedCountPaginator, "exact_count_limit", 10)
    return 10


def make_requests(count: int, prefix: str = "tok", **fields: object) -> list[ContainerRequest]:
    now = timezone.now()
    rows = [
        ContainerRequest(
            token=f"{prefix}{index:09d}", source_image=f"docker.io/library/tool{index}:1", target_image=f"w/{index}",
            created_at=now - dt.timedelta(minutes=index), expires_at=now + dt.timedelta(hours=1), **fields,
        )
        for index in range(count)
    ]  # fmt: skip
    return ContainerRequest.objects.bulk_create(rows)


def page_queries(client: Client, url: str) -> tuple[str, list[str]]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return response.content.decode(), [query["sql"] for query in queries.captured_queries]


def unbounded_counts(queries: list[str]) -> list[str]:
    """COUNTs not over a LIMITed subquery: the ones that read every row that matches."""
    return [sql for sql in queries if sql.upper().startswith("SELECT COUNT(") and " LIMIT " not in sql.upper()]


def test_token_search_is_an_equality_on_the_token_column(operator: Client) -> None:
    make_requests(3)
    page, queries = page_queries(operator, f"{REQUESTS}?q=tok000000001")
    listed = [sql for sql in queries if f"FROM {TABLE}" in sql and "tok000000001" in sql]
    assert listed
    assert all(f"{TABLE}.\"token\" = 'tok000000001'" in sql for sql in listed)
    assert all(f'UPPER({TABLE}."token"' not in sql for sql in listed)
    assert "docker.io/library/tool1:1" in page
    assert "tok000000000" not in page
    assert "tok000000002" not in page


def test_token_search_matches_the_case_stored_only(operator: Client) -> None:
    make_requests(2)
    page = operator.get(f"{REQUESTS}?q=TOK000000001").content.decode()
    assert "0 container requests" in page
    assert "docker.io/library/tool1:1" not in page


def test_image_search_finds_any_part_of_the_image(operator: Client) -> None:
    make_requests(12)
    page = operator.get(f"{REQUESTS}?q=Library/Tool11").content.decode()
    assert "tok000000011" in page
    assert "1 container request" in page


def test_trigram_index_exists_and_answers_the_image_search() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'request_source_image_trgm'")
        (definition,) = cursor.fetchone()
        cursor.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")
        assert cursor.fetchone() == (1,)
    assert "USING gin (upper((source_image)::text) gin_trgm_ops)" in definition
    search = ContainerRequest.objects.filter(source_image__icontains="biocontainers/samtools").order_by()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
    assert "request_source_image_trgm" in search.explain()


@pytest.mark.parametrize(
    ("admin_class", "model", "indexes"),
    [
        (ContainerRequestAdmin, ContainerRequest, ["containerrequest_token", "containerrequest_fingerprint",
         "request_source_image_trgm", "request_user_name_upper", "request_user_email_upper"]),
        (BuildAdmin, Build, ["build_build_id", "build_container_id", "build_target_image", "build_user_name_upper"]),
        (InjectedLayerAdmin, InjectedLayer, ["injectedlayer_gzip_digest", "injectedlayer_tar_digest",
         "injectedlayer_request_id"]),
    ],
)  # fmt: skip
def test_every_search_arm_is_answered_by_an_index(admin_class: type, model: type, indexes: list[str]) -> None:
    """With sequential scans off, the plan of a search names each index and reads no table whole."""
    model_admin = admin_class(model, site)
    make_requests(1, prefix="abc")  # a request whose token is the term searched
    queryset, _ = model_admin.get_search_results(RequestFactory().get("/"), model.objects.all(), "abc000000000")
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
    plan = queryset.order_by().explain()
    assert "Seq Scan" not in plan
    assert [name for name in indexes if name not in plan] == [], plan


def test_large_list_is_counted_by_the_planner_not_by_count(
    operator: Client, small_exact_limit: int, django_assert_max_num_queries: object
) -> None:
    make_requests(30)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE requests_app_containerrequest")
    with django_assert_max_num_queries(12):  # type: ignore[operator]
        page, queries = page_queries(operator, REQUESTS)
    assert unbounded_counts(queries) == []
    assert any("EXPLAIN" in sql for sql in queries)
    assert "30 container requests" in page  # the planner's estimate after ANALYZE: exact here
    assert "tok000000000" in page


def test_small_list_is_counted_exactly_without_a_full_count(operator: Client) -> None:
    make_requests(3)
    page, queries = page_queries(operator, f"{REQUESTS}?state=active")
    assert unbounded_counts(queries) == []
    assert not any("EXPLAIN" in sql for sql in queries)
    assert "3 container requests" in page


def test_every_scale_admin_runs_no_unbounded_count(operator: Client, small_exact_limit: int) -> None:
    requests = make_requests(12)
    download = LayerDownload.objects.create(
        identity="i" * 64, url="https://e.org/l.tgz", gzip_digest="sha256:" + "1" * 64, gzip_size=3,
        tar_digest="sha256:" + "2" * 64,
    )  # fmt: skip
    for request in requests:
        InjectedLayer.objects.create(
            request=request, position=0, kind="http", url=download.url, download=download, gzip_size=3,
            gzip_digest=download.gzip_digest, tar_digest=download.tar_digest,
        )  # fmt: skip
    GeneratedDocument.objects.bulk_create(
        GeneratedDocument(digest=f"sha256:{index:064d}", media_type="application/vnd.oci.image.config.v1+json", size=2)
        for index in range(12)
    )  # fmt: skip
    for url in ("injectedlayer/", "layerdownload/", "generateddocument/", "containerrequest/?o=-5"):
        page, queries = page_queries(operator, f"/admin/requests_app/{url}")
        assert unbounded_counts(queries) == [], url
    page = operator.get("/admin/requests_app/layerdownload/").content.decode()
    assert 'class="field-joined">12<' in page  # the layers joined, counted for the page's rows


def test_layer_search_by_digest_and_token_is_exact(operator: Client) -> None:
    first, second = make_requests(2)
    for request, digit in ((first, "3"), (second, "4")):
        InjectedLayer.objects.create(request=request, position=0, kind="data", gzip_digest="sha256:" + digit * 64,
                                     gzip_size=1, tar_digest="sha256:" + "5" * 64)  # fmt: skip
    page, queries = page_queries(operator, f"/admin/requests_app/injectedlayer/?q=sha256:{'4' * 64}")
    assert not any('UPPER("requests_app_injectedlayer"' in sql for sql in queries)
    assert second.token in page
    assert first.token not in page
    page = operator.get(f"/admin/requests_app/injectedlayer/?q={first.token}").content.decode()
    assert first.token in page
    assert second.token not in page


def test_platform_filter_lists_the_values_without_select_distinct(operator: Client) -> None:
    make_requests(2)
    make_requests(1, prefix="arm", platform="linux/arm64")
    page, queries = page_queries(operator, REQUESTS)
    assert not any("DISTINCT" in sql and '"platform"' in sql for sql in queries)
    assert "?platform=linux%2Famd64" in page
    assert "?platform=linux%2Farm64" in page
    page = operator.get(f"{REQUESTS}?platform=linux%2Farm64").content.decode()
    assert "arm000000000" in page
    assert "tok000000000" not in page
    assert distinct_values(ContainerRequest, "platform") == ["linux/amd64", "linux/arm64"]


@pytest.mark.parametrize("is_large", [False, True])
def test_date_drill_down_lists_the_days_with_rows(
    operator: Client, monkeypatch: pytest.MonkeyPatch, is_large: bool
) -> None:
    """A small list reads its few days with a DISTINCT; a large one probes the index per day, never a DISTINCT."""
    if is_large:
        monkeypatch.setattr(EstimatedCountPaginator, "exact_count_limit", 3)
    zone = timezone.get_current_timezone()
    days = [dt.datetime(2026, 3, day, 12, tzinfo=zone) for day in (2, 2, 9, 31)]
    for index, created in enumerate(days):
        ContainerRequest.objects.create(token=f"day{index:09d}", source_image="a/b:1", target_image="x",
                                        created_at=created, expires_at=created)  # fmt: skip
    page, queries = page_queries(operator, f"{REQUESTS}?created_at__year=2026&created_at__month=3")
    assert any("DISTINCT" in sql for sql in queries) is not is_large
    probe = 'SELECT 1 AS "a" FROM ' + TABLE  # noqa: S608 (an EXISTS per day, in the queries captured)
    assert any(sql.startswith(probe) for sql in queries) is is_large
    shown = sorted(int(day) for day in re.findall(r"created_at__day=(\d+)", page))
    assert shown == [2, 9, 31]
    page = operator.get(REQUESTS).content.decode()  # all in one month: Django starts at its days
    assert "created_at__day=9" in page
    page = operator.get(f"{REQUESTS}?created_at__year=2026&created_at__month=3&created_at__day=9").content.decode()
    assert "day000000002" in page
    assert "day000000000" not in page


def test_build_admin_searches_exactly_and_by_target_prefix(operator: Client) -> None:
    build = make_build("failed", user_name="Alice")
    other = make_build("succeeded", container_file="FROM busybox\nRUN echo other\n")
    page, queries = page_queries(operator, f"/admin/builds/build/?q={build.build_id}")
    assert not any('UPPER("builds_build"."build_id"' in sql for sql in queries)
    assert build.build_id in page
    assert other.build_id not in page
    page = operator.get(f"/admin/builds/build/?q={other.target_image[:-4]}").content.decode()
    assert other.build_id in page
    assert build.build_id in operator.get("/admin/builds/build/?q=aLI").content.decode()  # a name's start, any case
    assert build.build_id not in operator.get("/admin/builds/build/?q=lice").content.decode()
    page, queries = page_queries(operator, "/admin/builds/build/?state__exact=failed")
    assert unbounded_counts(queries) == []
    assert build.build_id in page
    assert other.build_id not in page
    assert Build.objects.count() == 2


def test_sqlite_migrates_without_the_trigram_index(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")}
    env["WAVE_DATA_DIR"] = str(tmp_path)
    done = subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(tmp_path / "wave.sqlite3") as database:
        indexes = {row[0] for row in database.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "request_revoked_at" in indexes
    assert "request_source_image_trgm" not in indexes
