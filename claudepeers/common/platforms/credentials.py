"""The kernel's word on who is at the other end of a UNIX connection: (pid, uid).

Linux answers ``getsockopt(SOL_SOCKET, SO_PEERCRED)`` with a ``struct ucred``
(pid, uid, gid: three ints). macOS has no SO_PEERCRED; its local-domain options live at
level ``SOL_LOCAL`` (0) in ``<sys/un.h>``: ``LOCAL_PEERCRED`` (0x001) gives a
``struct xucred`` from ``<sys/ucred.h>``::

    struct xucred {
        u_int cr_version;            /* XUCRED_VERSION, 0 */
        uid_t cr_uid;                /* effective user id */
        short cr_ngroups;
        gid_t cr_groups[NGROUPS];    /* NGROUPS = 16 */
    };

which has no pid, so the pid comes from ``LOCAL_PEERPID`` (0x002, a ``pid_t``);
``LOCAL_PEEREPID`` (0x003, the "effective" pid of a socket made on another process's
behalf) is the fallback. The parsers take bytes, so they are tested here with recorded
answers; only the ``getsockopt`` calls need the real kernel.
"""

from __future__ import annotations

import socket
import struct
from typing import Any, Callable

#: Linux ``struct ucred``: pid_t pid, uid_t uid, gid_t gid.
UCRED = struct.Struct("=iII")
#: Darwin ``struct xucred`` in native alignment: 4 + 4 + 2 (+2 padding) + 16 * 4 = 76 bytes.
XUCRED = struct.Struct("@IIh16I")
XUCRED_VERSION = 0
PID = struct.Struct("@i")

SOL_LOCAL = 0
LOCAL_PEERCRED = 0x001
LOCAL_PEERPID = 0x002
LOCAL_PEEREPID = 0x003


def parse_ucred(raw: bytes) -> tuple[int, int]:
    """(pid, uid) from Linux's SO_PEERCRED answer."""
    if len(raw) != UCRED.size:
        raise OSError(f"SO_PEERCRED answered {len(raw)} bytes, expected {UCRED.size}")
    pid, uid, _gid = UCRED.unpack(raw)
    return pid, uid


def parse_xucred(raw: bytes) -> int:
    """The effective uid from macOS's LOCAL_PEERCRED answer (a ``struct xucred``)."""
    if len(raw) < XUCRED.size:
        raise OSError(f"LOCAL_PEERCRED answered {len(raw)} bytes, expected {XUCRED.size}")
    version, uid, _ngroups, *_groups = XUCRED.unpack(raw[: XUCRED.size])
    if version != XUCRED_VERSION:
        raise OSError(f"LOCAL_PEERCRED answered xucred version {version}, expected {XUCRED_VERSION}")
    return uid


def parse_pid(raw: bytes) -> int:
    """The pid from macOS's LOCAL_PEERPID / LOCAL_PEEREPID answer (a ``pid_t``)."""
    if len(raw) != PID.size:
        raise OSError(f"LOCAL_PEERPID answered {len(raw)} bytes, expected {PID.size}")
    (pid,) = PID.unpack(raw)
    if pid <= 0:
        raise OSError(f"LOCAL_PEERPID answered pid {pid}")
    return pid


def linux_peer(sock: Any) -> tuple[int, int]:
    """(pid, uid) of the peer of a connected UNIX socket on Linux."""
    return parse_ucred(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, UCRED.size))


def darwin_peer(sock: Any) -> tuple[int, int]:
    """(pid, uid) of the peer of a connected UNIX socket on macOS."""
    uid = parse_xucred(sock.getsockopt(SOL_LOCAL, LOCAL_PEERCRED, XUCRED.size))
    try:
        pid = parse_pid(sock.getsockopt(SOL_LOCAL, LOCAL_PEERPID, PID.size))
    except OSError:
        pid = parse_pid(sock.getsockopt(SOL_LOCAL, LOCAL_PEEREPID, PID.size))
    return pid, uid


def unsupported_peer(sock: Any) -> tuple[int, int]:
    """Platforms we have no reader for: say so instead of guessing."""
    raise OSError("this platform offers no peer credentials we know how to read")


def reader_for(system: str) -> Callable[[Any], tuple[int, int]]:
    """The credential reader of ``system`` (a ``sys.platform`` value, "linux" for all Linuxes)."""
    if system == "linux":
        return linux_peer
    if system == "darwin":
        return darwin_peer
    return unsupported_peer


#: SO_PEERPIDFD (Linux 6.5+; Python 3.11 does not name it): a pidfd of the connecting process.
SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)


def linux_peer_pidfd(sock: Any) -> int | None:
    """A pidfd of the process that connected ``sock``, or None where the kernel has none
    (before Linux 6.5: ENOPROTOOPT) or no descriptor is left (EMFILE)."""
    try:
        return sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD)
    except OSError:
        return None


def no_peer_pidfd(sock: Any) -> int | None:
    """Elsewhere the option number means something else: never ask."""
    return None


def pidfd_reader_for(system: str) -> Callable[[Any], int | None]:
    """The peer-pidfd reader of ``system``."""
    return linux_peer_pidfd if system == "linux" else no_peer_pidfd
