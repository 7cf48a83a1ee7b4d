"""Registry credentials at rest: the service's pairing keys, Tower sessions, lookups, its own registry logins.

Every secret column holds a Fernet token (`credentials.secrets.seal`), never plain text: private keys,
Tower bearer and refresh tokens, registry passwords. Nothing here is shown by the admin but what is safe.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from credentials.secrets import seal, unseal


class PairingKey(models.Model):
    """An RSA-2048 key pair this service owns for one Tower endpoint (`POST /pairing`).

    Tower encrypts the registry credentials it sends with the public key; `pairing_id` names the pair in
    those calls. A pair is handed out until its lease ends (a new pair then), and kept to decrypt with
    until it is retired.
    """

    service = models.CharField(max_length=32, default="tower")
    endpoint = models.CharField(max_length=512, help_text="The Tower API base URL, as normalised.")
    pairing_id = models.BigIntegerField(unique=True, help_text="Random; what Tower passes back as `pairingId`.")
    public_key = models.TextField(help_text="base64 of the X.509 SubjectPublicKeyInfo DER.")
    private_key_sealed = models.TextField(editable=False, help_text="PKCS#8 PEM, encrypted at rest.")
    created_at = models.DateTimeField(default=timezone.now)
    lease_ends_at = models.DateTimeField(help_text="Handed out to new pairings until then.")
    retired_at = models.DateTimeField(db_index=True, help_text="Deleted after then; decrypts until then.")

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["service", "endpoint", "-created_at"], name="pairingkey_endpoint")]

    def __str__(self) -> str:
        return f"{self.service} pairing {self.pairing_id} ({self.endpoint})"

    def private_key_pem(self) -> bytes:
        return unseal(self.private_key_sealed).encode()


class TowerAuth(models.Model):
    """The current Tower tokens of a caller, found by the access token they sent first.

    Tower answers a refresh with new tokens; later requests still arrive with the original token, so the
    refreshed pair is kept here and used in its place. `key` is a keyed hash of (endpoint, original token).
    """

    key = models.CharField(max_length=64, unique=True, help_text="Keyed hash of endpoint and original token.")
    endpoint = models.CharField(max_length=512)
    access_token_sealed = models.TextField(editable=False)
    refresh_token_sealed = models.TextField(blank=True, editable=False)
    user_id = models.BigIntegerField(null=True, blank=True, help_text="The Tower user, once identified.")
    user_name = models.CharField(max_length=256, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    refreshed_at = models.DateTimeField(null=True, blank=True)
    refreshes = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "Tower session"

    def __str__(self) -> str:
        who = self.user_name or "unidentified user"
        return f"{who} at {self.endpoint}"

    @property
    def access_token(self) -> str:
        return unseal(self.access_token_sealed)

    @property
    def refresh_token(self) -> str:
        return unseal(self.refresh_token_sealed) if self.refresh_token_sealed else ""

    def set_tokens(self, *, access_token: str, refresh_token: str) -> None:
        self.access_token_sealed = seal(access_token)
        self.refresh_token_sealed = seal(refresh_token) if refresh_token else ""


class CredentialLookup(models.Model):
    """One lookup of a caller's registry credentials in Tower (cache hits are not recorded): no secrets."""

    class Outcome(models.TextChoices):
        FOUND = "found", "found"
        NOT_FOUND = "not-found", "not found"
        ERROR = "error", "error"

    endpoint = models.CharField(max_length=512)
    workspace_id = models.BigIntegerField(null=True, blank=True)
    user_id = models.BigIntegerField(null=True, blank=True)
    user_name = models.CharField(max_length=256, blank=True)
    registry = models.CharField(max_length=256)
    credentials_id = models.CharField(max_length=64, blank=True, help_text="The Tower credentials matched.")
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    error = models.TextField(blank=True, help_text="What failed (never a secret).")
    duration_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.registry} for {self.user_name or self.user_id}: {self.outcome}"


class RegistryCredential(models.Model):
    """The service's own login at a registry (its build and cache repositories, anonymous callers' pulls).

    Entered by operators in the admin; the password is write-only there and encrypted at rest. An entry
    here wins over the same host in the `WAVE_REGISTRY_CREDENTIALS` file.
    """

    registry = models.CharField(
        max_length=256, unique=True, help_text="Registry host, with its port when not the default (`quay.io`, "
        "`registry.example.com:5000`); `docker.io` for Docker Hub.",
    )  # fmt: skip
    username = models.CharField(max_length=256)
    password_sealed = models.TextField(editable=False)
    description = models.CharField(max_length=256, blank=True)
    is_enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["registry"]
        verbose_name = "registry credential"

    def __str__(self) -> str:
        return f"{self.username} at {self.registry}"

    @property
    def password(self) -> str:
        return unseal(self.password_sealed)

    def set_password(self, password: str) -> None:
        self.password_sealed = seal(password)
