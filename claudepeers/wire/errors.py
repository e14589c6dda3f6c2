"""The error tags of the wire: which plain exception (claudepeers.common.errors) travels
under which AMP tag. The actors raise the plain exceptions; a command's ``errors`` names the
tags it may answer, built with :func:`errors_with`.
"""

from __future__ import annotations

from claudepeers.common.errors import (
    PeersError,
    UnknownPeer,
    AmbiguousPeer,
    PeerGone,
    NotRegistered,
    AlreadyRegistered,
    InvalidArgument,
    LimitExceeded,
    NameTaken,
    IdentityRejected,
    PermissionDenied,
    AuthenticationRequired,
    KillRefused,
    BrokerUnavailable,
    InternalError,
    UnknownMessage,
    ClaimConflict,
    UnknownApproval,
)

COMMON_ERRORS: dict[type[Exception], bytes] = {
    InvalidArgument: b"INVALID_ARGUMENT",
    PermissionDenied: b"PERMISSION_DENIED",
    AuthenticationRequired: b"AUTHENTICATION_REQUIRED",
    BrokerUnavailable: b"BROKER_UNAVAILABLE",
    InternalError: b"INTERNAL_ERROR",
    NotRegistered: b"NOT_REGISTERED",
}

PEER_ERRORS: dict[type[Exception], bytes] = {
    UnknownPeer: b"UNKNOWN_PEER",
    AmbiguousPeer: b"AMBIGUOUS_PEER",
    PeerGone: b"PEER_GONE",
}


def errors_with(*extra: dict[type[Exception], bytes]) -> dict[type[Exception], bytes]:
    """The common tags and those of ``extra``: a command's ``errors``."""
    merged = dict(COMMON_ERRORS)
    for more in extra:
        merged.update(more)
    return merged


APPROVAL_ERRORS: dict[type[Exception], bytes] = {UnknownApproval: b"UNKNOWN_APPROVAL"}

__all__ = [
    "APPROVAL_ERRORS", "COMMON_ERRORS", "PEER_ERRORS", "errors_with", "PeersError", "UnknownPeer", "AmbiguousPeer",
    "PeerGone", "NotRegistered", "AlreadyRegistered", "InvalidArgument", "LimitExceeded", "NameTaken",
    "IdentityRejected", "PermissionDenied", "AuthenticationRequired", "KillRefused", "BrokerUnavailable",
    "InternalError", "UnknownMessage", "ClaimConflict", "UnknownApproval",
]
