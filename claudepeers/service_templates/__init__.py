"""Service templates (systemd user unit, launchd agent) filled in by ``claude-peers install --service``.

``etc/systemd`` and ``etc/launchd`` in the source tree hold identical copies.
"""
