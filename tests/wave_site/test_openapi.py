"""The OpenAPI document describes every field and shows examples of every answer, errors included."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

API_OPERATIONS = {
    "container_token_create", "container_create_v2", "container_token_describe", "container_token_revoke",
    "container_describe_v2", "container_status_v2",
}  # fmt: skip
CREDENTIALS_OPERATIONS = {"credentials_validate", "credentials_validate_v2", "pairing_register"}


@pytest.fixture(scope="module")
def schema(django_db_blocker: Any) -> dict[str, Any]:
    with django_db_blocker.unblock():
        response = Client().get("/openapi/?format=json")
    assert response.status_code == 200
    return response.json()


def operations(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {op["operationId"]: op for path in schema["paths"].values() for op in path.values()}


def undocumented_properties(schema: dict[str, Any]) -> list[str]:
    missing = []
    for name, component in schema["components"]["schemas"].items():
        for field, spec in component.get("properties", {}).items():
            if not spec.get("description"):
                missing.append(f"{name}.{field}")
    return missing


def test_every_field_has_a_description(schema: dict[str, Any]) -> None:
    assert undocumented_properties(schema) == []


def test_every_container_operation_shows_examples_of_each_answer(schema: dict[str, Any]) -> None:
    found = operations(schema)
    assert set(found) >= API_OPERATIONS
    for operation_id in API_OPERATIONS:
        for status, response in found[operation_id]["responses"].items():
            content = response.get("content", {}).get("application/json")
            if content is None:  # e.g. the revoke's bodiless 200
                continue
            assert content.get("examples"), f"{operation_id} {status} has no example"


def test_request_bodies_have_examples(schema: dict[str, Any]) -> None:
    found = operations(schema)
    for operation_id in ("container_token_create", "container_create_v2"):
        assert found[operation_id]["requestBody"]["content"]["application/json"]["examples"]


def test_every_answer_of_the_container_api_is_documented(schema: dict[str, Any]) -> None:
    found = operations(schema)
    answers = {operation_id: set(found[operation_id]["responses"]) for operation_id in API_OPERATIONS}
    assert answers == {
        "container_token_create": {"200", "400", "401", "413", "415", "429", "500", "503"},
        "container_create_v2": {"200", "400", "401", "413", "415", "429", "500", "503"},
        "container_token_describe": {"200", "404", "500", "503"},
        "container_token_revoke": {"200", "401", "403", "404", "429", "500", "503"},
        "container_describe_v2": {"200", "404", "500", "503"},
        "container_status_v2": {"200", "404", "500", "503"},
    }


def test_answers_are_described_by_their_serializers(schema: dict[str, Any]) -> None:
    found = operations(schema)

    def component(operation_id: str, status: str) -> str:
        content = found[operation_id]["responses"][status]["content"]["application/json"]
        return content["schema"]["$ref"].rsplit("/", 1)[1]

    assert component("container_token_create", "200") == "ContainerTokenV1Response"
    assert component("container_create_v2", "200") == "ContainerTokenV2Response"
    assert component("container_token_describe", "200") == "ContainerDescription"
    assert component("container_describe_v2", "200") == "ContainerRecordV2"
    assert component("container_status_v2", "200") == "ContainerStatus"
    assert {component(op, "404") for op in API_OPERATIONS - {"container_token_create", "container_create_v2"}} == {
        "ErrorMessage"
    }
    v2 = schema["components"]["schemas"]["ContainerTokenV2Response"]
    assert sorted(v2["required"]) == ["containerImage", "freeze"]  # a dry run answers with these only


def test_every_credentials_operation_is_documented_with_examples(schema: dict[str, Any]) -> None:
    found = operations(schema)
    answers = {operation_id: set(found[operation_id]["responses"]) for operation_id in CREDENTIALS_OPERATIONS}
    assert answers == {
        "credentials_validate": {"200", "400", "413", "415", "429", "500", "503"},
        "credentials_validate_v2": {"200", "400", "413", "415", "429", "500", "503"},
        "pairing_register": {"200", "400", "413", "415", "429", "500", "503"},
    }
    for operation_id in CREDENTIALS_OPERATIONS:
        assert found[operation_id]["tags"] == ["credentials"]
        assert found[operation_id]["requestBody"]["content"]["application/json"]["examples"]
        for status, response in found[operation_id]["responses"].items():
            assert response["content"]["application/json"].get("examples"), f"{operation_id} {status} has no example"


def test_credentials_answers_are_described(schema: dict[str, Any]) -> None:
    found = operations(schema)
    valid = found["credentials_validate"]["responses"]["200"]["content"]["application/json"]
    assert valid["schema"] == {"type": "boolean"}
    pairing = found["pairing_register"]["responses"]["200"]["content"]["application/json"]
    assert pairing["schema"]["$ref"] == "#/components/schemas/PairingResponse"
    component = schema["components"]["schemas"]["PairingResponse"]
    assert component["properties"]["pairingId"]["type"] == "string"
    assert sorted(component["required"]) == ["pairingId", "publicKey"]


BUILD_OPERATIONS = {"build_describe", "build_status", "build_logs"}


def test_every_build_operation_is_documented_with_examples_of_each_answer(schema: dict[str, Any]) -> None:
    found = operations(schema)
    answers = {operation_id: set(found[operation_id]["responses"]) for operation_id in BUILD_OPERATIONS}
    assert answers == {
        "build_describe": {"200", "404", "500", "503"},
        "build_status": {"200", "404", "500", "503"},
        "build_logs": {"200", "304", "404", "500", "503"},
    }
    for operation_id in BUILD_OPERATIONS:
        assert found[operation_id]["tags"] == ["builds"]
        (parameter,) = found[operation_id]["parameters"]
        assert parameter["in"] == "path"
        assert parameter["schema"] == {"type": "string", "pattern": "^bd-[0-9a-f]{16}_[0-9]+$"}
        for status, response in found[operation_id]["responses"].items():
            if status == "304":  # no body
                assert "content" not in response
                continue
            (content,) = response["content"].values()
            assert content.get("examples"), f"{operation_id} {status} has no example"


def test_build_answers_are_described_by_their_serializers(schema: dict[str, Any]) -> None:
    found = operations(schema)

    def content(operation_id: str, status: str) -> dict[str, Any]:
        return found[operation_id]["responses"][status]["content"]

    assert content("build_describe", "200")["application/json"]["schema"]["$ref"].endswith("/BuildRecord")
    assert content("build_status", "200")["application/json"]["schema"]["$ref"].endswith("/BuildStatus")
    logs = content("build_logs", "200")
    assert list(logs) == ["text/plain"]
    assert logs["text/plain"]["schema"] == {"type": "string"}
    for operation_id in BUILD_OPERATIONS:
        assert content(operation_id, "404")["application/json"]["schema"]["$ref"].endswith("/ErrorMessage")
    components = schema["components"]["schemas"]
    assert sorted(components["BuildStatus"]["required"]) == ["id", "status"]
    assert sorted(components["BuildRecord"]["required"]) == sorted(
        ["buildId", "dockerFile", "targetImage", "platform", "status", "state", "creationTime", "pageUri"]
    )
    assert set(components["BuildRecord"]["properties"]) >= {
        "buildId", "dockerFile", "condaFile", "spackFile", "targetImage", "platform", "startTime", "duration",
        "exitStatus", "digest", "status", "succeeded",
    }  # fmt: skip
