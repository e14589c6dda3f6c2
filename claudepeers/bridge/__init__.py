"""The MCP bridge (`claude-peers mcp`): one per agent session, MCP on stdio, AMP to the broker.

Kept empty on purpose: ``handshake`` must import fast, before Twisted and the mcp SDK.
"""
