"""``python -m claudepeers`` is the ``claude-peers`` command."""

from claudepeers.cli.main import main

if __name__ == "__main__":
    main()
