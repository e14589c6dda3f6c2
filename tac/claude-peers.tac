"""twistd -ny tac/claude-peers.tac: the same broker service as `twistd claude-peers`.

Settings come from the CLAUDE_PEERS_* environment (see README); the .tac only builds
the Application and its one root service.
"""

from twisted.application import service

from claudepeers.broker.service import Options, makeService

options = Options()
options.parseOptions([])
application = service.Application("claude-peers")
makeService(options).setServiceParent(application)
