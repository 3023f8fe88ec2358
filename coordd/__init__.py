"""coordd: a local service that manages yum/dnf repositories under concurrent use."""

from coordd.api.names import VERSION as __version__

__all__ = ["__version__"]
