"""The test suite's own settings: which Hypothesis profile a run uses, and what it allows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

from conftest import ROOT, hypothesis_profile


def test_ci_selects_the_ci_profile_and_a_name_overrides_it() -> None:
    """CI=true (as CI services and .ci/run set it) picks "ci"; elsewhere "shared-machine";
    HYPOTHESIS_PROFILE wins over both."""
    assert hypothesis_profile({"CI": "true"}) == "ci"
    assert hypothesis_profile({"CI": "1"}) == "ci"
    assert hypothesis_profile({}) == hypothesis_profile({"CI": "false"}) == "shared-machine"
    assert hypothesis_profile({"CI": "true", "HYPOTHESIS_PROFILE": "shared-machine"}) == "shared-machine"


def test_the_ci_profile_has_no_deadline_or_speed_check_and_repeats_its_examples() -> None:
    """On a busy CI machine no example fails for its time, and a failure there repeats."""
    ci = settings.get_profile("ci")
    assert ci.deadline is None and HealthCheck.too_slow in ci.suppress_health_check
    assert ci.derandomize and ci.print_blob


def test_a_run_with_ci_true_loads_the_ci_profile() -> None:
    """What a CI run gets: the profile is loaded as the suite starts (conftest), not only defined."""
    code = ("import sys; sys.path.insert(0, 'tests'); import conftest; from hypothesis import settings; "
            "print(settings.default.derandomize, settings.default.deadline)")
    env = {"PATH": "/usr/bin:/bin", "CI": "true"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["True", "None"], done.stderr


LOGGING_TESTS = '''
import pytest
from twisted.logger import Logger

log = Logger()


def fail_in_a_callback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        log.failure("Unhandled Error")  # what an automat NoTransition in a callback comes to


def test_logs_a_failure():
    fail_in_a_callback()


@pytest.mark.logs_errors
def test_logs_a_failure_on_purpose():
    fail_in_a_callback()
'''


def test_a_failure_logged_through_twisted_fails_the_test_unless_it_says_so(tmp_path: Path) -> None:
    """conftest's ``no_logged_errors``: a test during which Twisted logs a failure fails, naming
    it (the bridge's NoTransition tracebacks once passed so); ``logs_errors`` excuses a test."""
    (tmp_path / "test_logging.py").write_text(LOGGING_TESTS)
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{ROOT}"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider",
                           "test_logging.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    # The fixture fails the test as it ends (pytest counts an error at teardown); the excused one passes.
    assert "ERROR test_logging.py::test_logs_a_failure - Failed: 1 error(s) logged" in done.stdout, done.stdout
    assert "test_logs_a_failure_on_purpose" not in done.stdout.split("short test summary info")[1]
    assert "ValueError: boom" in done.stdout
