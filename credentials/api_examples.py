"""Examples shown in the OpenAPI document for the credentials API (`/validate-creds`, `/pairing`)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample

from wave_site.api_examples import SERVICE_ERROR_EXAMPLES, error_example

VALIDATE_CREDS_REQUEST_EXAMPLE = OpenApiExample(
    "credentials for quay.io",
    request_only=True,
    value={"userName": "alice", "password": "an-access-token", "registry": "quay.io"},
)
VALIDATE_CREDS_EXAMPLES = [
    VALIDATE_CREDS_REQUEST_EXAMPLE,
    OpenApiExample("valid", response_only=True, status_codes=["200"], value=True),
    error_example("invalid credentials", 400, "Invalid credentials for registry 'quay.io'"),
    error_example("refused registry", 400, "Invalid registry hostname"),
    error_example("blank password", 400, "password: This field may not be blank."),
    error_example(
        "malformed registry",
        400,
        "Invalid registry 'quay.io/alice' - expected a host name with an optional port, "
        "such as quay.io or registry.example.com:5000",
    ),
    error_example("body too large", 413, "Request body exceeds the maximum allowed size of 33554432 bytes"),
    error_example("not JSON", 415, "Unsupported media type: send a JSON body with Content-Type: application/json"),
    error_example(
        "throttled", 429, "Too many credential checks from this address (10 per minute) - retry in 42 seconds"
    ),
    error_example(
        "account throttled",
        429,
        "Too many credential checks of this account at registry 'quay.io' (20 per hour) - retry in 1791 seconds",
    ),
    error_example("registry down", 503, "Registry 'quay.io' is unreachable: ConnectTimeout"),
    *SERVICE_ERROR_EXAMPLES,
]
PAIRING_EXAMPLES = [
    OpenApiExample(
        "pair with Tower",
        request_only=True,
        value={"service": "tower", "endpoint": "https://api.cloud.seqera.io"},
    ),
    OpenApiExample(
        "key pair",
        response_only=True,
        status_codes=["200"],
        value={
            "pairingId": "3791524086107154812",
            "publicKey": "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA...IDAQAB",
        },
    ),
    error_example("unknown service", 400, 'service: "gitlab" is not a valid choice.'),
    error_example("missing endpoint", 400, "endpoint: This field is required."),
    error_example(
        "invalid endpoint",
        400,
        "Invalid Tower endpoint 'ftp://tower.example.org' - it must be an http(s) URL such as "
        "https://api.cloud.seqera.io",
    ),
    error_example(
        "refused endpoint",
        400,
        "Tower endpoint refused: Destination '10.0.0.7' is not allowed: it resolves to a private or local address "
        "(set WAVE_SSRF_ALLOW=10.0.0.7 to allow it)",
    ),
    error_example(
        "unresolvable endpoint",
        400,
        "Tower endpoint refused: Destination 'tower.example.invalid' is not allowed: the host name does not "
        "resolve (check its spelling)",
    ),
    error_example("body too large", 413, "Request body exceeds the maximum allowed size of 33554432 bytes"),
    error_example("not JSON", 415, "Unsupported media type: send a JSON body with Content-Type: application/json"),
    error_example(
        "throttled", 429, "Too many pairing requests from this address (10 per minute) - retry in 42 seconds"
    ),
    *SERVICE_ERROR_EXAMPLES,
]
