"""Who is at the other end of a connection, and what it may do.

The kernel records a Unix socket's peer credentials at ``connect()``; the server reads them
once, at accept (``SO_PEERCRED``), and they decide the connection's access for its life.
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
import struct
import time
from dataclasses import dataclass, field

from anyio.abc import SocketAttribute, SocketStream

ACCESS_CACHE_S = 60.0


@dataclass(frozen=True)
class Peer:
    uid: int
    gid: int
    pid: int


def peer_credentials(stream: SocketStream) -> Peer:
    raw: socket.socket = stream.extra(SocketAttribute.raw_socket)  # noqa: S610 - anyio, not Django
    creds = raw.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    return Peer(uid=uid, gid=gid, pid=pid)


@dataclass
class AccessPolicy:
    """Root, the daemon's own user and the admin group may mutate; the read group may read."""

    admin_group: str | None = None
    read_group: str | None = None
    # Group lookups go through NSS (possibly LDAP): cache them, but briefly, so that
    # removing someone from a group takes effect within a minute, not at the next reload.
    _cache: dict[tuple[int, int], tuple[float, frozenset[str]]] = field(default_factory=dict)

    def access_of(self, peer: Peer) -> frozenset[str]:
        """The access levels of a peer, decided once per connection."""
        key = (peer.uid, peer.gid)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is None or now - cached[0] > ACCESS_CACHE_S:
            cached = self._cache[key] = (now, self._compute(peer))
        return cached[1]

    def _compute(self, peer: Peer) -> frozenset[str]:
        if peer.uid in (0, os.geteuid()):
            return frozenset({"read", "admin"})
        groups = _groups_of(peer)
        if self.admin_group and self.admin_group in groups:
            return frozenset({"read", "admin"})
        if self.read_group and self.read_group in groups:
            return frozenset({"read"})
        return frozenset()

    def reset(self, admin_group: str | None, read_group: str | None) -> None:
        self.admin_group, self.read_group = admin_group, read_group
        self._cache.clear()


def _groups_of(peer: Peer) -> set[str]:
    gids = {peer.gid}
    try:
        name = pwd.getpwuid(peer.uid).pw_name
        gids.update(os.getgrouplist(name, peer.gid))
    except KeyError:
        pass
    names: set[str] = set()
    for gid in gids:
        try:
            names.add(grp.getgrgid(gid).gr_name)
        except KeyError:
            continue
    return names
