from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor

from builds.models import Build
from builds.services import BuildAnswer
from registry.reference import parse_image
from requests_app.models import ContainerRequest
from requests_app.serializers import (
    ContainerRequestV1InputSerializer,
    ContainerRequestV2InputSerializer,
    ContainerTokenV1ResponseSerializer,
    ContainerTokenV2ResponseSerializer,
    instant,
)
from requests_app.services import Accepted


def test_each_input_serializer_binds_fields_of_its_own() -> None:
    first = ContainerRequestV1InputSerializer(data={})
    second = ContainerRequestV1InputSerializer(data={})
    for name in ("containerImage", "towerWorkspaceId", "containerConfig"):
        assert first.fields[name] is not second.fields[name]
        assert first.fields[name].parent is first
        assert second.fields[name].parent is second
        assert first.fields[name] is not ContainerRequestV1InputSerializer._declared_fields[name]
    assert ContainerRequestV1InputSerializer._declared_fields["containerImage"].parent is None  # prototype untouched
    nested_first, nested_second = first.fields["containerConfig"], second.fields["containerConfig"]
    assert nested_first.fields["env"] is not nested_second.fields["env"]
    assert nested_first.fields["layers"] is not nested_second.fields["layers"]


def body(n: int) -> dict[str, object]:
    layer = {"location": f"https://h/{n}", "gzipDigest": f"sha256:{n:064x}", "gzipSize": n, "tarDigest": "t"}
    return {
        "containerImage": f"image{n}",
        "containerConfig": {"env": [f"N={n}"], "layers": [layer]},
        "dryRun": n % 2 == 0,
    }


def validate(n: int) -> dict[str, object]:
    serializer = ContainerRequestV2InputSerializer(data=body(n))
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def test_concurrent_validations_keep_their_own_values() -> None:
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(validate, range(400)))
    for n, data in enumerate(results):
        assert data["containerImage"] == f"image{n}"
        assert data["dryRun"] is (n % 2 == 0)
        assert data["containerConfig"]["env"] == [f"N={n}"]
        assert data["containerConfig"]["layers"][0]["gzipSize"] == n


def test_invalid_values_are_reported_per_serializer() -> None:
    bad = ContainerRequestV1InputSerializer(data={"containerImage": 42, "towerWorkspaceId": "x"})
    good = ContainerRequestV1InputSerializer(data={"containerImage": "ubuntu"})
    assert not bad.is_valid()
    assert good.is_valid()
    assert set(bad.errors) == {"containerImage", "towerWorkspaceId"}
    assert good.errors == {}


def test_output_leaves_out_null_and_empty_values() -> None:
    request = ContainerRequest(
        token="0123456789ab",
        source_image="docker.io/library/busybox:latest",
        target_image="localhost:9090/wt/0123456789ab/library/busybox:latest",
        platform="linux/amd64",
        container_config={"env": []},
        created_at=dt.datetime(2026, 11, 27, 10, 0, 0, 123456, tzinfo=dt.UTC),
        expires_at=dt.datetime(2026, 11, 28, 22, 0, tzinfo=dt.UTC),
    )
    accepted = Accepted(request=request, source=parse_image("busybox"))
    assert ContainerTokenV1ResponseSerializer(accepted).data == {
        "containerToken": "0123456789ab",
        "targetImage": "localhost:9090/wt/0123456789ab/library/busybox:latest",
        "expiration": "2026-11-28T22:00:00.000Z",
        "containerImage": "docker.io/library/busybox:latest",
    }
    assert ContainerTokenV2ResponseSerializer(accepted).data == {
        "containerToken": "0123456789ab",
        "targetImage": "localhost:9090/wt/0123456789ab/library/busybox:latest",
        "expiration": "2026-11-28T22:00:00.000Z",
        "containerImage": "docker.io/library/busybox:latest",
        "freeze": False,
        "succeeded": True,
    }


def test_a_dry_run_answers_with_the_source_only() -> None:
    accepted = Accepted(request=None, source=parse_image("quay.io/a/b:1"))
    assert ContainerTokenV2ResponseSerializer(accepted).data == {"containerImage": "quay.io/a/b:1", "freeze": False}


def test_instants_are_utc_with_milliseconds() -> None:
    moment = dt.datetime(2026, 11, 27, 12, 0, 0, 987654, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert instant(moment) == "2026-11-27T10:00:00.987Z"


def answer(n: int) -> dict[str, object]:
    request = ContainerRequest(
        token=f"{n:012x}",
        source_image=f"docker.io/library/image{n}:latest",
        target_image=f"localhost:9090/wt/{n:012x}/library/image{n}:latest",
        build_id="" if n % 2 else f"bd-{n}",
        expires_at=dt.datetime(2026, 11, 28, tzinfo=dt.UTC) + dt.timedelta(milliseconds=n),
    )
    build = None
    if not n % 2:  # a build still running: not known to have succeeded yet
        running = Build(build_id=f"bd-{n}", state=Build.State.RUNNING)
        build = BuildAnswer(target="x", build_id=f"bd-{n}", build=running, cached=False, started=True)
    accepted = Accepted(request=request, source=parse_image(f"image{n}"), build=build)
    return ContainerTokenV2ResponseSerializer(accepted).data


def test_concurrent_answers_keep_their_own_values() -> None:
    # Output fields are bound once per serializer class and shared: rendering must not keep state in them.
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(answer, range(400)))
    for n, data in enumerate(results):
        assert data["containerToken"] == f"{n:012x}"
        assert data["containerImage"] == f"docker.io/library/image{n}:latest"
        assert data["expiration"] == f"2026-11-28T00:00:00.{n:03d}Z"
        assert data.get("buildId") == (None if n % 2 else f"bd-{n}")
        assert data.get("succeeded") == (True if n % 2 else None)
        assert data.get("cached") == (None if n % 2 else False)
