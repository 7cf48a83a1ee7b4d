"""Builder backends behind one small interface (`base.Builder`); buildah is the one there is."""

from __future__ import annotations

from builds.backends.base import Builder, BuildJob, BuildOutcome

__all__ = ["BuildJob", "BuildOutcome", "Builder", "builder"]


def builder() -> Builder:
    """The configured backend."""
    from builds.backends.buildah import BuildahBuilder

    return BuildahBuilder()
