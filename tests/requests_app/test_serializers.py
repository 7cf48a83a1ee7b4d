from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from requests_app.serializers import ContainerRequestV1InputSerializer, ContainerRequestV2InputSerializer


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
