"""Prompt hooks: ``claude-peers hook <event>``, run by Claude Code and Codex at fixed moments of a turn.

A hook process lives for a fraction of a second on every prompt, so this package imports
neither Twisted nor mcp: :mod:`.amp_socket` speaks the few AMP commands a hook needs over
one blocking socket, :mod:`.output` turns messages into the agents' hook output, and
:mod:`.run` ties them together and never lets an error fail the agent's turn.
:mod:`.config` edits the agents' hook settings for ``claude-peers install --hooks``.
"""
