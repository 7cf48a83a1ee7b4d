"""Wave: container provisioning service. `__version__` is the one source of the service version."""

from __future__ import annotations

__version__ = "0.1.0"
