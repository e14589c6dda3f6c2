"""Helpers for the CLI tests: running ``claude-peers`` and stand-in agents as subprocesses.

Every process started here is ended by its pid; every wait has a bounded deadline and
waits on the process's own output, never on a fixed sleep.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from claudepeers.hooks.amp_socket import AmpSocket
from claudepeers.wire.box import json_value, text

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent


def cli(env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run ``python -m claudepeers ARGS`` to completion; text stdout/stderr captured."""
    return subprocess.run(
        [sys.executable, "-m", "claudepeers", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )


def cli_many(env: dict[str, str], commands: list[list[str]], timeout: float = 30) -> list[subprocess.CompletedProcess]:
    """Run several CLI commands at once (they are independent); results in order."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "claudepeers", *args],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for args in commands
    ]
    results = []
    for args, proc in zip(commands, procs):
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        results.append(subprocess.CompletedProcess(args, proc.returncode, out, err))
    return results


def cli_json(env: dict[str, str], *args: str) -> object:
    """Run a command that prints JSON, check it succeeded, return the parsed value."""
    done = cli(env, *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def read_line(proc: subprocess.Popen, prefix: str, timeout: float = 15.0) -> str:
    """The next line of ``proc``'s stdout starting with ``prefix`` (bounded wait)."""
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"process {proc.pid} ended (status {proc.wait()}) before {prefix!r}")
        if line.startswith(prefix):
            return line.rstrip("\n")
    raise AssertionError(f"no line starting with {prefix!r} within {timeout} s")


@dataclass
class Agents:
    """Stand-in agent sessions (processes named ``claude``/``codex``) for one broker."""

    base: Path
    env: dict[str, str]
    processes: list[subprocess.Popen] = field(default_factory=list)

    def _launcher(self, kind: str) -> Path:
        path = self.base / "bin" / kind
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            path.write_text(
                f"#!{sys.executable}\n"
                "import sys\n"
                f"sys.path[:0] = [{str(ROOT)!r}, {str(TESTS)!r}]\n"
                "from cli_fake_agent import main\n"
                f"main({kind!r})\n"
            )
            path.chmod(0o755)
        return path

    def start(self, kind: str, name: str, summary: str, inline: bool = False) -> tuple[str, subprocess.Popen]:
        """Start an agent of ``kind`` (claude or codex); returns its peer id and process."""
        args = [str(self._launcher(kind)), name, summary] + (["--inline"] if inline else [])
        proc = subprocess.Popen(
            args, env=self.env, cwd=str(self.base), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        self.processes.append(proc)
        peer_id = read_line(proc, "READY ").split()[1]
        return peer_id, proc

    def stop_all(self) -> None:
        """End every agent this helper started, by pid."""
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout:
                proc.stdout.close()


class BrokerView:
    """Blocking questions to the broker (as the operator's CLI, unbound): status and sends."""

    def __init__(self, socket_path: Path) -> None:
        """Talk to the broker at ``socket_path``."""
        self.socket_path = socket_path

    def _call(self, command: str, arguments: list | None = None) -> dict:
        sock = AmpSocket.connect_unix(str(self.socket_path), 5.0)
        try:
            return sock.call(command, arguments or [])
        finally:
            sock.close()

    def peers(self) -> list[dict]:
        """Every peer the broker knows, with ``rewake_pid`` (the armed waiter's pid)."""
        return json_value(self._call("Status"), b"status")["peers"]

    def send(self, to: str, body: str) -> dict[str, str]:
        """Send as the CLI; the answer's text fields."""
        box = self._call("Send", [(b"to", text(to)), (b"body", text(body))])
        return {key.decode(): value.decode() for key, value in box.items() if not key.startswith(b"_")}

    def wait_for_waiter(self, name: str, other_than: int | None = None, timeout: float = 60.0) -> int:
        """The pid of the peer's armed waiter, once there is one (other than ``other_than``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for peer in self.peers():
                pid = peer.get("rewake_pid")
                if peer["name"] == name and peer["state"] == "online" and pid and pid != other_than:
                    return int(pid)
            time.sleep(0.02)  # a question to the broker each time: a few ms apart is enough
        raise TimeoutError(f"no rewake waiter armed for {name} within {timeout} s")
