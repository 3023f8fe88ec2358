"""The error every metadata parser of the yum importer raises for an unusable feed."""

from __future__ import annotations


class MetadataError(Exception):
    """The feed's metadata is unusable; the message names the file and the problem."""


__all__ = ["MetadataError"]
