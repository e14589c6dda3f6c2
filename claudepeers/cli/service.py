"""The broker as a user service: now :mod:`claudepeers.common.platforms.services` (these names stay)."""

from __future__ import annotations

from claudepeers.common.platforms.services import (
    LAUNCHD_LABEL,
    LAUNCHD_TEMPLATE,
    SYSTEMD_TEMPLATE,
    ServiceFile,
    render,
    render_launchd,
    render_systemd,
    template_text,
)

__all__ = [
    "LAUNCHD_LABEL",
    "LAUNCHD_TEMPLATE",
    "SYSTEMD_TEMPLATE",
    "ServiceFile",
    "render",
    "render_launchd",
    "render_systemd",
    "template_text",
]
