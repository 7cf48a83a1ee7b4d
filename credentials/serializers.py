"""Wire formats of the credentials API: `/validate-creds` and `/pairing` (field names as the seed API spells them)."""

from __future__ import annotations

from rest_framework import serializers


class ValidateCredsInputSerializer(serializers.Serializer):
    userName = serializers.CharField(max_length=1024, help_text="The user name at the registry (mandatory).")
    # Not trimmed: a password is checked exactly as given; only an empty or all-blank one is refused.
    password = serializers.CharField(
        max_length=4096,
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text="The password or access token at the registry (mandatory); never logged or echoed.",
    )
    registry = serializers.CharField(
        required=False,
        allow_blank=True,
        allow_null=True,
        max_length=512,
        help_text="The registry as `host[:port]` (`quay.io`, `registry.example.com:5000`); an `https://` or "
        "`http://` prefix is dropped. `docker.io` when omitted or blank.",
    )

    def validate_password(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("This field may not be blank.")
        return value


class PairingInputSerializer(serializers.Serializer):
    service = serializers.ChoiceField(choices=["tower"], help_text="The service to pair with: `tower`.")
    endpoint = serializers.CharField(
        max_length=512,
        help_text="The Tower API base URL, e.g. `https://api.cloud.seqera.io` (http or https, no user info).",
    )


class PairingResponseSerializer(serializers.Serializer):
    # CharField renders the number as a string of digits: ids may exceed what a JavaScript number holds exactly.
    pairingId = serializers.CharField(
        source="pairing_id",
        help_text="Names the key pair in Tower's calls (`pairingId=`): a decimal number, sent as a string of digits.",
    )
    publicKey = serializers.CharField(
        source="public_key", help_text="The public key: base64 of its X.509 SubjectPublicKeyInfo DER (RSA 2048)."
    )
