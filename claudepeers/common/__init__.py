"""Pieces every process uses: settings, the broker client, agent processes, git info, frames, platforms.
"""
