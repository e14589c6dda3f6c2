"""The test suite's own settings: which Hypothesis profile a run uses, and what it allows."""

from __future__ import annotations

import subprocess
import sys

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
