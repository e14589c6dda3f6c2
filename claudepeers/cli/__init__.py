"""The operator's command line: ``claude-peers <command>`` (see :mod:`claudepeers.cli.main`).

Every module here imports nothing reactor-related at import time, so ``--help`` and
``install`` stay fast and never choose a reactor by accident.
"""
