"""A container on one machine: its agent reaches the host's broker through the shared run
directory, and the broker decides who it is from the kernel's pid in its own namespace.

The container is a real pid namespace (``unshare --pid --fork --mount-proc``, as root)
with its own ``/proc``: the stand-in agent and the real bridge under it see container
pids only, and that is what they claim. The broker (here, outside) reads the connecting
process's pid from SO_PEERCRED in its own namespace and interprets the claim in the
claimant's namespace; a claim it cannot find among the connecting process's ancestors
there is refused, whatever it names outside.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest

from bridge_support import FakeAgent, asyncio_test, open_bridge
from claudepeers.common.platforms import namespaces
from conftest import ROOT, BrokerProcess
from hook_support import run_hook_blocking

UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
#: The stand-in runs as a child of the namespace's first process (sh), not as its pid 1,
#: which no agent walk takes for an agent.
CONTAINER = [*UNSHARE, "sh", "-c", '"$@"; exit $?', "sh"]


def _container_refusal() -> str | None:
    """Why no pid namespace can be made here, or None when one can."""
    if not sys.platform.startswith("linux"):
        return "pid namespaces are Linux's"
    if os.geteuid() != 0:
        return "needs root to make a pid namespace (run the tests as root, as CI does)"
    if shutil.which("unshare") is None:
        return "needs unshare(1) (apt-get install util-linux)"
    done = subprocess.run([*UNSHARE, "true"], capture_output=True, timeout=30)
    if done.returncode != 0:
        return f"the kernel refused a pid namespace: {done.stderr.decode(errors='replace').strip()}"
    return None


REFUSAL = _container_refusal()
pytestmark = pytest.mark.skipif(REFUSAL is not None, reason=REFUSAL or "")

#: Run inside the container under the agent (as its hook would be): register with each
#: claimed pid in turn over the host's socket; print what the broker answered.
CLAIMS = """
import json, os, subprocess, sys, psutil
sys.path[:0] = [{root!r}, {tests!r}]
from raw_amp import RawAMP, RemoteError
from claudepeers.wire import commands as wire
answers = {{}}
child = subprocess.Popen(["sleep", "30"])  # in here, not an ancestor of this process
for label, pid in json.loads(sys.argv[1]).items():
    pid = child.pid if pid == "child" else pid
    amp = RawAMP.unix({socket!r})
    try:
        start = psutil.Process(pid).create_time() if psutil.pid_exists(pid) else 1.0
        found = amp.call(wire.Register, agent_pid=pid, agent_start=start, client_type="claude-code",
                         cwd=os.getcwd(), delivery="none")
        answers[label] = "registered " + found["peer_id"]
    except RemoteError as exc:
        answers[label] = "refused: " + str(exc)
    finally:
        amp.close()
child.kill()
print(json.dumps(answers))
"""


@pytest.fixture
def boxed(broker_process: BrokerProcess) -> Iterator[FakeAgent]:
    """A stand-in ``claude`` in a pid namespace of its own, in the broker's environment."""
    agent = FakeAgent(broker_process.base, "boxed", "claude", broker_process.base, dict(broker_process.env),
                      wrapper=CONTAINER)
    agent.start()
    try:
        yield agent
    finally:
        agent.cleanup()
        print(f"--- stderr of the contained agent and its bridges ---\n{agent.log_text()[-4000:]}")


def agent_host_pid(agent: FakeAgent) -> int:
    """The stand-in's pid in our namespace (its process is unshare's grandchild)."""
    for proc in psutil.Process(agent.pid).children(recursive=True):
        if [os.path.basename(arg) for arg in proc.cmdline()[1:2]] == ["claude"]:
            return proc.pid
    raise AssertionError("the contained agent is not running")


def status(broker: BrokerProcess) -> dict[str, Any]:
    """``claude-peers status --json`` against the broker."""
    done = subprocess.run([sys.executable, "-m", "claudepeers", "status", "--json"], env=broker.env,
                          capture_output=True, text=True, timeout=30, check=True)
    return json.loads(done.stdout)


@asyncio_test
async def test_a_contained_bridge_registers_as_its_agent_in_the_brokers_namespace(
    boxed: FakeAgent, broker_process: BrokerProcess
) -> None:
    """The bridge in the container claims its agent's container pid; the broker records the
    agent by its pid in the broker's namespace, the one it checks liveness and kills by."""
    host_pid = agent_host_pid(boxed)
    contained = namespaces.namespace_pids(host_pid)
    assert namespaces.namespace_of(host_pid) != namespaces.namespace_of(os.getpid())
    assert len(contained) == 2 and contained[-1] != host_pid  # a pid of its own in there
    async with open_bridge(boxed) as bridge:
        whoami = await bridge.text("whoami")
        peer_id = whoami.split("ID: ")[1].split("\n")[0]
        peers = {peer["id"]: peer for peer in status(broker_process)["peers"]}
        assert peers[peer_id]["agent_pid"] == host_pid
        assert peers[peer_id]["state"] == "online"


def test_claims_from_a_container_are_read_in_its_namespace(boxed: FakeAgent, broker_process: BrokerProcess) -> None:
    """Only the agent's pid as the container sees it registers; a pid of our namespace (even
    the container's own launcher, an ancestor out here) or a non-ancestor in there is refused."""
    host_pid = agent_host_pid(boxed)
    container_pid = namespaces.namespace_pids(host_pid)[-1]
    claims = {"honest": container_pid, "host_pid_of_the_agent": host_pid, "launcher_out_here": boxed.pid,
              "not_an_ancestor": "child"}
    script = boxed.base / "claims.py"
    script.write_text(CLAIMS.format(root=str(ROOT), tests=str(ROOT / "tests"),
                                    socket=str(broker_process.socket_path)))
    run = run_hook_blocking(boxed, "Stop", command=f"{sys.executable} {script} '{json.dumps(claims)}'")
    assert run.status == 0, run.stderr
    answers = json.loads(run.stdout)
    assert answers["honest"].startswith("registered "), answers
    for label in ("host_pid_of_the_agent", "launcher_out_here", "not_an_ancestor"):
        assert answers[label].startswith("refused: "), (label, answers)
    assert "namespace" in answers["host_pid_of_the_agent"]
    peer_id = answers["honest"].split()[1]
    peers = {peer["id"]: peer for peer in status(broker_process)["peers"]}
    assert peers[peer_id]["agent_pid"] == host_pid
