"""A password hasher for tests that records the thread each hash ran in (and is cheap)."""

from __future__ import annotations

import threading
from typing import Any

from django.contrib.auth.hashers import PBKDF2PasswordHasher

THREADS: list[str] = []


class RecordingHasher(PBKDF2PasswordHasher):
    algorithm = "recording_pbkdf2"
    iterations = 1000

    def encode(self, password: str, salt: str, iterations: Any = None) -> str:
        THREADS.append(threading.current_thread().name)
        return super().encode(password, salt, iterations)
