"""The socket server's bounds (``Limits``), and admission at accept.

``coordd.api.server`` reads the bounds as it serves; the daemon's configuration holds their
defaults and meanings, and a reload changes them in place, so open connections see the new
ones.

Admission, at accept (``Limits.refusal``): at most ``max_connections`` in all, at most
``max_connections_per_user`` for any one uid (subscribed and lock-holding connections
count too), and the last ``admin_reserved_connections`` only for root and the admin group,
so that an administrator can still get in when other users have taken every other place.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits"]


@dataclass
class Limits:
    """The server's bounds, set from the daemon's configuration (which holds their defaults
    and meanings) and changed in place when it is reloaded."""

    max_frame_bytes: int
    max_batch: int
    max_connections: int
    idle_timeout_s: float
    max_connections_per_user: int
    admin_reserved_connections: int
    request_timeout_s: float
    max_send_queue_bytes: int
    max_send_queue_total_bytes: int

    @property
    def reserved(self) -> int:
        """The places only administrators may take: at most half of them all."""
        return min(self.admin_reserved_connections, self.max_connections // 2)

    @property
    def frame_timeout_s(self) -> float:
        return min(self.request_timeout_s, self.idle_timeout_s)

    def refusal(self, total: int, of_uid: int, uid: int, admin: bool) -> str | None:
        """Why a new connection of ``uid`` is refused, or None to admit it; ``total``: the
        connections open, ``of_uid``: those of ``uid``."""
        if total >= self.max_connections:
            return f"too many connections (limit {self.max_connections})"
        per_user = min(self.max_connections_per_user, self.max_connections)
        if of_uid >= per_user:
            return f"too many connections for uid {uid} (limit {per_user} per user)"
        if not admin and total >= self.max_connections - self.reserved:
            return (
                f"too many connections (limit {self.max_connections}; "
                f"the last {self.reserved} are kept for administrators)"
            )
        return None
