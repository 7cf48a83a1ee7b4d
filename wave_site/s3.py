"""The blob store on S3: django-storages' backend, sharing one boto3 session per process."""

from __future__ import annotations

import threading
from typing import Any

import boto3
from storages.backends.s3 import S3Storage

_sessions: dict[tuple[Any, ...], boto3.Session] = {}
_sessions_lock = threading.Lock()


class BlobS3Storage(S3Storage):  # type: ignore[misc]  # django-storages is untyped
    """django-storages' S3 storage with one boto3 session per process instead of one per thread.

    Each session loads the S3 service model anew (about 14 MB and a few hundred ms of CPU), and a web
    process keeps dozens of request threads. Resources stay per thread (boto3 resources are not
    thread-safe), made from the shared session under a lock.
    """

    def _create_session(self) -> boto3.Session:
        key = (self.session_profile, self.access_key, self.secret_key, self.security_token)
        session = _sessions.get(key)
        if session is None:
            session = _sessions.setdefault(key, super()._create_session())
        return session

    @property
    def connection(self) -> Any:
        with _sessions_lock:
            return super().connection
