"""The data dir (WAVE_DATA_DIR): made and kept private to the service's user by `manage.py`, not by settings.

It holds the SQLite database (sessions, password hashes), the generated secret key, the file cache, the
embedded broker's messages and the blobs: the folder is 0700 and the files in it 0600. `manage.py` (every
command, `run` included) sets the umask to 077, so that whatever the service's processes create there is
private, and calls `data_dir_prepare` before any command runs; importing the settings writes nothing, except
the secret key on a first start without WAVE_SECRET_KEY (wave_site.keys).
"""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

PRIVATE_UMASK = 0o077
# Files of earlier versions, created before the data dir was private.
PRIVATE_FILES = ("wave.sqlite3", "wave.sqlite3-wal", "wave.sqlite3-shm", "secret.key")


def embedded_broker_folders(data_dir: Path) -> dict[str, Path]:
    """The folders of Celery's filesystem transport (embedded mode), by transport option name."""
    broker = data_dir / "broker"
    return {
        "data_folder_in": broker / "queue",
        "data_folder_out": broker / "queue",
        "processed_folder": broker / "processed",
        "control_folder": broker / "control",
    }


def data_dir_prepare(data_dir: Path, *, embedded_broker: bool) -> None:
    """Create the data dir and the folders the service needs (0700), and make existing ones private."""
    folders = [data_dir]
    if embedded_broker:
        folders += list(embedded_broker_folders(data_dir).values())
    try:
        for folder in folders:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        data_dir.chmod(0o700)
        for name in PRIVATE_FILES:
            path = data_dir / name
            if path.exists():
                path.chmod(0o600)
    except OSError as exc:
        raise ImproperlyConfigured(f"WAVE_DATA_DIR {str(data_dir)!r} cannot be prepared: {exc.strerror}") from None


def private_umask() -> None:
    """Files and folders this process (and its children) creates are for the service's user only."""
    os.umask(PRIVATE_UMASK)
