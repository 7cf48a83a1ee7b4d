"""Every validation rule of the reference (behavior.md section 1), with its exact message.

Each rejected request must store nothing: no request row, no layer row, no blob.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from pytest_django.fixtures import Settings

from requests_app.models import ContainerRequest, InjectedLayer
from tests.requests_app.conftest import Post
from tests.support.layers import make_layer

pytestmark = pytest.mark.django_db

DIGEST = "sha256:" + "a" * 64
DOCKERFILE = base64.b64encode(b"FROM busybox\nRUN echo hi\n").decode()


def assert_rejected(response, message: str, status: int = 400) -> None:
    assert response.status_code == status, response.content
    assert response.json() == {"message": message}
    assert ContainerRequest.objects.count() == 0
    assert InjectedLayer.objects.count() == 0
    blobs = Path(default_storage.location)
    assert not any(p.is_file() for p in blobs.rglob("*"))


def test_neither_image_nor_file(post: Post) -> None:
    assert_rejected(
        post({"containerPlatform": "linux/amd64"}), "Specify either 'containerImage' or 'containerFile' attribute"
    )


def test_image_and_file_together(post: Post, image: str) -> None:
    assert_rejected(
        post({"containerImage": image, "containerFile": DOCKERFILE}),
        "Attributes 'containerImage' and 'containerFile' cannot be used in the same request",
    )


@pytest.mark.parametrize("attribute", ["containerFile", "condaFile", "spackFile"])
@pytest.mark.parametrize("value", ["not base64!!", "QUJD=", "QR==", "QUJ="])
def test_file_not_strict_base64(post: Post, attribute: str, value: str) -> None:
    # "QR==" and "QUJ=" decode, but carry non-zero unused bits: no encoder writes them
    assert_rejected(
        post({attribute: value}), f"Invalid '{attribute}' attribute - make sure it encoded as a base64 string"
    )


def test_container_file_too_large(post: Post) -> None:
    big = base64.b64encode(b"FROM busybox\n" + b"#" * 8000).decode()
    assert len(big) > 10000
    assert_rejected(post({"containerFile": big}), "Container file size exceeds the maximum allowed size of 10000 bytes")


def test_container_file_limit_is_configurable(post: Post, settings: Settings) -> None:
    settings.WAVE_CONTAINER_FILE_MAX_SIZE = 20
    assert_rejected(
        post({"containerFile": DOCKERFILE}), "Container file size exceeds the maximum allowed size of 20 bytes"
    )


def test_conda_file_too_large(post: Post) -> None:
    big = base64.b64encode(b"name: x\n" + b"#" * 40000).decode()
    assert len(big) > 50000
    assert_rejected(post({"condaFile": big}), "Conda file size exceeds the maximum allowed size of 50000 bytes")


def test_conda_file_limit_is_configurable(post: Post, settings: Settings) -> None:
    settings.WAVE_CONDA_FILE_MAX_SIZE = 8
    conda = base64.b64encode(b"name: x\n").decode()
    assert_rejected(post({"condaFile": conda}), "Conda file size exceeds the maximum allowed size of 8 bytes")


def test_default_limits_are_the_reference_ones() -> None:
    from wave_site import settings as defaults  # read from the environment-free defaults

    assert (defaults.WAVE_CONTAINER_FILE_MAX_SIZE, defaults.WAVE_CONDA_FILE_MAX_SIZE) == (10_000, 50_000)
    assert defaults.WAVE_LAYER_MAX_SIZE == 14_000_000
    assert defaults.WAVE_MAX_LAYERS == 64


def test_layers_beyond_the_limit_are_refused(post: Post, image: str, settings: Settings) -> None:
    settings.WAVE_MAX_LAYERS = 2
    layers = [make_layer({f"{n}.txt": b"x"}).as_request() for n in range(3)]
    assert_rejected(
        post({"containerImage": image, "containerConfig": {"layers": layers}}),
        "containerConfig.layers: At most 2 layers are allowed in one request, got 3.",
    )
    accepted = post({"containerImage": image, "containerConfig": {"layers": layers[:2]}})
    assert accepted.status_code == 200, accepted.content
    assert InjectedLayer.objects.count() == 2


def test_the_default_layer_limit_applies(post: Post, image: str) -> None:
    layer = make_layer({"a.txt": b"x"}).as_request(location="http://127.0.0.1:9/a.tar.gz")
    assert_rejected(
        post({"containerImage": image, "containerConfig": {"layers": [layer] * 2000}}),
        "containerConfig.layers: At most 64 layers are allowed in one request, got 2000.",
    )


def test_layer_location_too_long(post: Post, image: str, settings: Settings) -> None:
    settings.WAVE_LAYER_MAX_SIZE = 1000
    layer = make_layer({"a.txt": b"x" * 5000}).as_request(location="data:" + "A" * 1000)
    body = {"containerImage": image, "containerConfig": {"layers": [layer]}}
    assert_rejected(post(body), "Container layer exceeds the maximum allowed size")


def test_image_with_protocol(post: Post) -> None:
    assert_rejected(
        post({"containerImage": "http://docker.io/foo:latest"}),
        "Invalid container repository name — offending value: 'http://docker.io/foo:latest'",
    )


@pytest.mark.parametrize(
    "value",
    [
        "http:docker.io/foo",
        "docker:quay.io/foo:latest",
        "ubuntu: latest",
        "ubuntu ",
        "",
        "   ",
        "localhost:port/foo",
        "[::1/a",  # not the registry `[::1`
        "[:::]/foo",  # not an address: invalid, rather than "does not resolve"
    ],
)
def test_malformed_image_name(post: Post, value: str) -> None:
    assert_rejected(post({"containerImage": value}), f"Invalid container image name — offending value: '{value}'")


def test_digest_with_container_config(post: Post) -> None:
    body = {"containerImage": f"127.0.0.1:5000/x/y@{DIGEST}", "containerConfig": {"env": ["A=1"]}}
    assert_rejected(
        post(body), "Container requests made using a SHA256 as tag does not support the 'containerConfig' attribute"
    )


def test_unsupported_platform(post: Post, image: str) -> None:
    assert_rejected(post({"containerImage": image, "containerPlatform": "foo"}), "Unsupported container platform: foo")


def test_architecture_other_than_amd64_or_arm_is_unsupported(post: Post, image: str) -> None:
    response = post({"containerImage": image, "containerPlatform": "linux/s390x"})
    assert_rejected(response, "Unsupported container platform: linux/s390x")


def test_invalid_platform(post: Post, image: str) -> None:
    assert_rejected(
        post({"containerImage": image, "containerPlatform": "linux//amd64"}), "Invalid container platform: linux//amd64"
    )


@pytest.mark.parametrize(
    ("attribute", "label"),
    [("buildRepository", "Container build repository"), ("cacheRepository", "Container build cache repository")],
)
@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("https://quay.io/user/repo", "should not include any protocol prefix"),
        ("quay.io", "is invalid or incomplete"),
        ("quay.io/user/repo:1.0", "should not include any tag suffix"),
    ],
)
def test_build_and_cache_repository(post: Post, attribute: str, label: str, value: str, problem: str) -> None:
    body = {"containerFile": DOCKERFILE, attribute: value}
    assert_rejected(post(body), f"{label} {problem} - offending value: '{value}'")


@pytest.mark.parametrize("path", ["/.docker/config.json", "/kaniko"])
def test_container_file_touching_builder_secrets(post: Post, path: str) -> None:
    dockerfile = base64.b64encode(f"FROM busybox\nRUN cat /root{path}\n".encode()).decode()
    assert_rejected(post({"containerFile": dockerfile}), f"Invalid container file - it must not access '{path}'")


def test_v2_container_file_and_packages_conflict(post: Post) -> None:
    body = {"containerFile": DOCKERFILE, "packages": {"type": "CONDA", "entries": ["samtools"]}}
    assert_rejected(post(body, v2=True), "Attribute `containerFile` and `packages` conflicts each other")


def test_v2_conda_file_is_deprecated(post: Post) -> None:
    conda = base64.b64encode(b"dependencies: [samtools]\n").decode()
    assert_rejected(post({"condaFile": conda}, v2=True), "Attribute `condaFile` is deprecated - use `packages` instead")


def test_v1_packages_not_allowed(post: Post, image: str) -> None:
    body = {"containerImage": image, "packages": {"type": "CONDA", "entries": ["samtools"]}}
    assert_rejected(post(body), "Attribute `packages` is not allowed")


def test_freeze_without_build_repository(post: Post, image: str) -> None:
    assert_rejected(
        post({"containerImage": image, "freeze": True}, v2=True),
        "Attribute `buildRepository` must be specified when using freeze mode",
    )


def test_missing_image_upstream(post: Post, anonymous_image) -> None:
    missing = f"{anonymous_image.registry.host}/library/nothing-here:1.0"
    assert_rejected(
        post({"containerImage": missing}), f"Container image '{missing}' does not exist or access is not authorized"
    )


def test_missing_tag_upstream(post: Post, anonymous_image) -> None:
    missing = f"{anonymous_image.registry.host}/library/busybox:no-such-tag"
    assert_rejected(
        post({"containerImage": missing}), f"Container image '{missing}' does not exist or access is not authorized"
    )


def test_malformed_json(post: Post) -> None:
    assert_rejected(post('{"containerImage": <script>'), "Malformed JSON request body")


def test_json_that_is_not_an_object(post: Post) -> None:
    assert_rejected(post('["ubuntu"]'), "Expected a JSON object.")
    assert_rejected(post("42"), "Expected a JSON object.")


@pytest.mark.parametrize("depth", [5_000, 100_000])
def test_json_nested_too_deeply(post: Post, depth: int) -> None:
    assert_rejected(post("[" * depth + "]" * depth), "Malformed JSON request body")
    assert_rejected(post('{"containerImage": ' + "[" * depth + "]" * depth + "}"), "Malformed JSON request body")


BAD_LAYER = {"location": "data:", "gzipDigest": "d", "gzipSize": "big", "tarDigest": "t"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"containerImage": 42}, "containerImage: Not a valid string."),
        ({"containerImage": "x", "towerWorkspaceId": "abc"}, "towerWorkspaceId: A valid integer is required."),
        (
            {"containerImage": "x", "containerConfig": {"env": "A=1"}},
            "containerConfig.env: Expected a JSON array.",
        ),
        ({"containerImage": "x", "containerConfig": "x"}, "containerConfig: Expected a JSON object."),
        ({"containerImage": "x", "containerConfig": {"layers": "x"}}, "containerConfig.layers: Expected a JSON array."),
        (
            {"containerImage": "x", "containerConfig": {"layers": [None]}},
            "containerConfig.layers[0]: This field may not be null.",
        ),
        (
            {"containerImage": "x", "containerConfig": {"layers": ["x"]}},
            "containerConfig.layers[0]: Expected a JSON object.",
        ),
        (
            {"containerImage": "x", "containerConfig": {"env": [None]}},
            "containerConfig.env[0]: This field may not be null.",
        ),
        (
            {"containerImage": "x", "containerConfig": {"layers": [BAD_LAYER]}},
            "containerConfig.layers[0].gzipSize: A valid integer is required.",
        ),
    ],
)
def test_wrong_types(post: Post, body: dict, message: str) -> None:
    assert_rejected(post(body), message)


def test_layer_digest_format(post: Post, image: str) -> None:
    layer = make_layer({"a": b"1"}).as_request(gzipDigest="md5:123")
    assert_rejected(
        post({"containerImage": image, "containerConfig": {"layers": [layer]}}),
        "Invalid container layer 'gzipDigest' attribute - offending value: 'md5:123'",
    )


@pytest.mark.parametrize("entry", ["FOO", "=value", "A B"])
def test_env_entry_must_name_a_variable(post: Post, image: str, entry: str) -> None:
    body = {"containerImage": image, "containerConfig": {"env": ["A=1", entry]}}
    assert_rejected(
        post(body),
        f"Invalid container config 'env' entry - expected the form NAME=value, offending value: '{entry}'",
    )


@pytest.mark.parametrize("entry", ["EMPTY=", "A==b", "PATH=/bin:/usr/bin"])
def test_env_entry_values_may_be_anything(post: Post, image: str, entry: str) -> None:
    response = post({"containerImage": image, "containerConfig": {"env": [entry]}})
    assert response.status_code == 200, response.content
    assert ContainerRequest.objects.get().container_config == {"env": [entry]}


def test_layer_location_kind(post: Post, image: str) -> None:
    layer = make_layer({"a": b"1"}).as_request(location="ftp://example.org/layer.tgz")
    assert_rejected(
        post({"containerImage": image, "containerConfig": {"layers": [layer]}}),
        "Container layer location must be an http(s) URL or a 'data:' payload - offending value: "
        "'ftp://example.org/layer.tgz'",
    )


def test_layer_location_of_another_kind_is_shown_without_credentials(post: Post, image: str) -> None:
    layer = make_layer({"a": b"1"}).as_request(location="ftp://alice:secret@example.org/l.tgz?sig=abc")
    assert_rejected(
        post({"containerImage": image, "containerConfig": {"layers": [layer]}}),
        "Container layer location must be an http(s) URL or a 'data:' payload - offending value: "
        "'ftp://REDACTED@example.org/l.tgz?sig=REDACTED'",
    )


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("http://alice:secret@127.0.0.1:abc/x", "Destination '127.0.0.1:abc' is not allowed: the port is invalid"),
        ("http://alice:secret@/x", "Destination 'http://REDACTED@/x' is not allowed: the URL names no host"),
    ],
)
def test_refused_layer_hosts_are_named_without_credentials(post: Post, image: str, location: str, message: str) -> None:
    layer = make_layer({"a": b"1"}).as_request(location=location)
    assert_rejected(post({"containerImage": image, "containerConfig": {"layers": [layer]}}), message)


def test_image_with_protocol_is_shown_without_credentials(post: Post) -> None:
    assert_rejected(
        post({"containerImage": "https://alice:secret@quay.io/foo:latest"}),
        "Invalid container repository name — offending value: 'https://REDACTED@quay.io/foo:latest'",
    )
    assert_rejected(
        post({"containerImage": "alice:secret@quay.io/foo:latest"}),
        "Invalid container image name — offending value: 'REDACTED@quay.io/foo:latest'",
    )


def test_repository_with_credentials_is_shown_without_them(post: Post) -> None:
    body = {"containerFile": DOCKERFILE, "cacheRepository": "alice:secret@quay.io/user/cache"}
    assert_rejected(
        post(body),
        "Container build cache repository should not include any tag suffix - offending value: "
        "'REDACTED@quay.io/user/cache'",
    )


def test_repository_with_protocol_is_shown_without_credentials(post: Post) -> None:
    body = {"containerFile": DOCKERFILE, "buildRepository": "https://alice:secret@quay.io/user/repo"}
    assert_rejected(
        post(body),
        "Container build repository should not include any protocol prefix - offending value: "
        "'https://REDACTED@quay.io/user/repo'",
    )


def test_data_layer_with_wrong_gzip_digest(post: Post, image: str) -> None:
    layer = make_layer({"a": b"1"})
    body = {"containerImage": image, "containerConfig": {"layers": [layer.as_request(gzipDigest=DIGEST)]}}
    assert_rejected(
        post(body), f"Container layer gzip digest does not match - expected '{DIGEST}', got '{layer.gzip_digest}'"
    )


def test_data_layer_with_wrong_size(post: Post, image: str) -> None:
    layer = make_layer({"a": b"1"})
    size = len(layer.gzip_bytes)
    body = {"containerImage": image, "containerConfig": {"layers": [layer.as_request(gzipSize=size + 1)]}}
    assert_rejected(post(body), f"Container layer gzip size does not match - expected {size + 1} bytes, got {size}")


def test_data_layer_with_wrong_tar_digest(post: Post, image: str) -> None:
    layer = make_layer({"a": b"1"})
    body = {"containerImage": image, "containerConfig": {"layers": [layer.as_request(tarDigest=DIGEST)]}}
    assert_rejected(
        post(body), f"Container layer tar digest does not match - expected '{DIGEST}', got '{layer.tar_digest}'"
    )


def test_data_layer_not_base64(post: Post, image: str) -> None:
    layer = make_layer({"a": b"1"}).as_request(location="data:%%%")
    assert_rejected(
        post({"containerImage": image, "containerConfig": {"layers": [layer]}}),
        "Invalid container layer data - make sure it encoded as a base64 string",
    )


def test_source_on_a_private_address_is_refused(post: Post, image: str, settings: Settings) -> None:
    settings.WAVE_SSRF_ALLOW = []
    assert_rejected(
        post({"containerImage": image}),
        "Destination '127.0.0.1' is not allowed: it resolves to a private or local address"
        " (set WAVE_SSRF_ALLOW=127.0.0.1 to allow it)",
    )


def test_request_body_too_large(post: Post, settings: Settings) -> None:
    settings.WAVE_MAX_REQUEST_BYTES = 2048
    body = {"containerImage": "ubuntu", "fingerprint": "x" * 4096}
    assert_rejected(post(body), "Request body exceeds the maximum allowed size of 2048 bytes", status=413)


def test_a_conda_file_is_a_recipe_build_checked_before_anything_is_stored(post: Post) -> None:
    conda = base64.b64encode(b"dependencies: samtools\n").decode()  # a string, not a list
    assert_rejected(
        post({"condaFile": conda}),
        "The Conda environment in 'condaFile' has no dependencies: add a 'dependencies' list",
    )


MAX_BIGINT = "Ensure this value is less than or equal to 9223372036854775807."


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"containerImage": "x", "fingerprint": "f" * 257},
            "fingerprint: Ensure this field has no more than 256 characters.",
        ),
        (
            {"containerImage": "x", "timestamp": "t" * 65},
            "timestamp: Ensure this field has no more than 64 characters.",
        ),
        ({"containerImage": "x", "towerWorkspaceId": 2**70}, f"towerWorkspaceId: {MAX_BIGINT}"),
        (
            {"containerImage": "x", "containerConfig": {"layers": [{**BAD_LAYER, "gzipSize": 2**70}]}},
            f"containerConfig.layers[0].gzipSize: {MAX_BIGINT}",
        ),
    ],
)
def test_values_beyond_what_is_stored_are_400(post: Post, body: dict, message: str) -> None:
    assert_rejected(post(body), message)


def test_choice_errors_do_not_echo_the_value(post: Post) -> None:
    response = post({"containerImage": "x", "nameStrategy": "<script>alert(1)</script>"}, v2=True)
    assert_rejected(response, "nameStrategy: Not a valid choice.")


def test_non_json_content_type_is_415(client) -> None:
    response = client.post("/container-token", data="containerImage=x", content_type="text/<b>html</b>")
    assert_rejected(response, "Unsupported media type: send a JSON body with Content-Type: application/json", 415)


def test_layer_location_on_a_private_address_is_refused(post: Post, image: str, settings: Settings) -> None:
    settings.WAVE_SSRF_ALLOW = ["127.0.0.1"]  # the source registry is allowed, the layer host is not
    layer = make_layer({"a": b"1"}).as_request(location="http://user:pw@169.254.169.254:80/latest/meta-data")
    assert_rejected(
        post({"containerImage": image, "containerConfig": {"layers": [layer]}}),
        "Destination '169.254.169.254' is not allowed: it resolves to a private or local address"
        " (set WAVE_SSRF_ALLOW=169.254.169.254 to allow it)",
    )


def test_layer_location_with_an_unclosed_ipv6_bracket(post: Post, image: str) -> None:
    layer = make_layer({"a": b"1"}).as_request(location="http://[::1/x")
    assert_rejected(
        post({"containerImage": image, "containerConfig": {"layers": [layer]}}),
        "Destination '[::1' is not allowed: the host is invalid",
    )


@pytest.mark.parametrize(
    ("location", "shown"),
    [
        ("http://127.0.0.1:9/good/small\r\nX-Injected: 1", "http://127.0.0.1:9/good/small\\r\\nX-Injected: 1"),
        ("http://127.0.0.1:9/a\tb.tar.gz", "http://127.0.0.1:9/a\\tb.tar.gz"),
        ("http://127.0.0.1:9/a b.tar.gz", "http://127.0.0.1:9/a b.tar.gz"),
        ("http://127.0.0.1:9/a\x1b[0m.tar.gz", "http://127.0.0.1:9/a\\x1b[0m.tar.gz"),
        ("http://127.0.0.1:9/a\u200b.tar.gz", "http://127.0.0.1:9/a\u200b.tar.gz"),
        ("http://alice:pw@127.0.0.1:9/a b?sig=SECRET", "http://REDACTED@127.0.0.1:9/a b?sig=REDACTED"),
    ],
)
def test_layer_location_with_spaces_or_control_characters(post: Post, image: str, location: str, shown: str) -> None:
    layer = make_layer({"a": b"1"}).as_request(location=location)
    assert_rejected(
        post({"containerImage": image, "containerConfig": {"layers": [layer]}}),
        f"Container layer location must not contain spaces or control characters - offending value: '{shown}'",
    )


LOCATION_KIND = "Container layer location must be an http(s) URL or a 'data:' payload - offending value: "


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("alice:s3cr3tpw@host/x", f"{LOCATION_KIND}'REDACTED@host/x'"),
        ("ftp://h/x?q=1;X-Amz-Signature=SECRET", f"{LOCATION_KIND}'ftp://h/x?q=1;X-Amz-Signature=REDACTED'"),
        ("ftp://h/x?X-Amz-Signature%3DSECRET", f"{LOCATION_KIND}'ftp://h/x?X-Amz-Signature=REDACTED'"),
        ("ftp://h/x?q=X-Amz-Signature%3DSECRET", f"{LOCATION_KIND}'ftp://h/x?REDACTED'"),
        ("http://[::1/x?X-Amz-Signature=SECRET", "Destination '[::1' is not allowed: the host is invalid"),
    ],
)
def test_echoed_layer_locations_never_show_secrets(post: Post, image: str, location: str, message: str) -> None:
    layer = make_layer({"a": b"1"}).as_request(location=location)
    response = post({"containerImage": image, "containerConfig": {"layers": [layer]}})
    assert_rejected(response, message)
    assert b"SECRET" not in response.content
    assert b"s3cr3tpw" not in response.content


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"containerImage": "localhost:1/x/y:latest?X-Amz-Signature=SECRET"},
            "Invalid container image name — offending value: 'localhost:1/x/y:latest?X-Amz-Signature=REDACTED'",
        ),
        (
            {"containerImage": "alice:s3cr3tpw@localhost:1/x/y:latest;X-Amz-Signature=SECRET"},
            "Invalid container image name — offending value: "
            "'REDACTED@localhost:1/x/y:latest;X-Amz-Signature=REDACTED'",
        ),
        (
            {"containerFile": DOCKERFILE, "buildRepository": "quay.io/user/repo?X-Amz-Signature%3DSECRET"},
            "Container build repository is invalid or incomplete - offending value: "
            "'quay.io/user/repo?X-Amz-Signature=REDACTED'",
        ),
    ],
)
def test_echoed_image_and_repository_names_never_show_secrets(post: Post, body: dict, message: str) -> None:
    response = post(body)
    assert_rejected(response, message)
    assert b"SECRET" not in response.content
    assert b"s3cr3tpw" not in response.content


def test_config_limits_default_to_64_kib_and_1000_entries() -> None:
    from wave_site import settings as defaults

    assert (defaults.WAVE_MAX_CONFIG_BYTES, defaults.WAVE_MAX_CONFIG_ENTRIES) == (65536, 1000)


CONFIG_TOO_LARGE = (
    "Container config size exceeds the maximum allowed size of 65536 bytes"
    " (entrypoint, cmd, env and workingDir together)"
)


@pytest.mark.parametrize(
    "config",
    [
        {"env": ["BIG=" + "x" * 65536]},
        {"cmd": ["x" * 40000], "entrypoint": ["y" * 30000]},
        {"env": [f"V{n}=" + "x" * 100 for n in range(700)]},
    ],
)
def test_container_config_larger_than_the_limit(post: Post, image: str, config: dict) -> None:
    assert_rejected(post({"containerImage": image, "containerConfig": config}), CONFIG_TOO_LARGE)


def test_a_31_mib_env_value_is_refused(post: Post, image: str) -> None:
    body = {"containerImage": image, "containerConfig": {"env": ["BIG=" + "x" * (31 * 1024 * 1024)]}}
    assert_rejected(post(body), CONFIG_TOO_LARGE)


def test_container_config_size_limit_is_configurable(post: Post, image: str, settings: Settings) -> None:
    settings.WAVE_MAX_CONFIG_BYTES = 2048
    config = {"env": ["A=" + "x" * 1000], "cmd": ["y" * 1000], "workingDir": "/w"}
    assert_rejected(
        post({"containerImage": image, "containerConfig": config}),
        "Container config size exceeds the maximum allowed size of 2048 bytes"
        " (entrypoint, cmd, env and workingDir together)",
    )
    config["cmd"] = ["y" * 900]
    accepted = post({"containerImage": image, "containerConfig": config})
    assert accepted.status_code == 200, accepted.content
    assert ContainerRequest.objects.get().container_config == config


@pytest.mark.parametrize("key", ["env", "cmd", "entrypoint"])
def test_more_config_entries_than_the_limit(post: Post, image: str, key: str) -> None:
    entries = [f"V{n}=" for n in range(100_000)]
    assert_rejected(
        post({"containerImage": image, "containerConfig": {key: entries}}),
        f"containerConfig.{key}: At most 1000 entries are allowed, got 100000.",
    )
    accepted = post({"containerImage": image, "containerConfig": {key: entries[:1000]}})
    assert accepted.status_code == 200, accepted.content
    assert ContainerRequest.objects.get().container_config == {key: entries[:1000]}
