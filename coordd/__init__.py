"""coordd: a local service that manages yum/dnf repositories under concurrent use."""

__version__ = "0.1.0"
