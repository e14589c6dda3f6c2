"""Benchmark of the bridge's tool-argument validation, on the real tool schemas.

Every tool call the agent makes is validated against its tool's ``inputSchema`` before it
reaches the broker. Two ways are timed on realistic, well-formed arguments (what nearly
every call is) and on a few malformed ones:

- ``quick+jsonschema``: what ``bridge/tool_schemas.py`` does: ``_QuickCheck`` (the few keywords our
  schemas use) answers "valid" itself and hands everything else to jsonschema;
- ``jsonschema``: one jsonschema validator compiled once per tool
  (``validator_for(schema)(schema)``), asked ``iter_errors`` for every call, as a single
  validator would be (``is_valid`` is timed too, the cheapest question it answers).

Run: ``python bench/validation_bench.py [--calls 20000] [--repeats 7]``. Prints microseconds
per call (median of the repeats, and the fastest) for each tool case and way.
"""

from __future__ import annotations

import argparse
import statistics
import timeit
from typing import Any, Callable

from jsonschema.validators import validator_for

from claudepeers.bridge import tool_schemas as tools

#: (tool, arguments): what agents send, with a message of ordinary length.
WELL_FORMED: list[tuple[str, dict[str, Any]]] = [
    ("send_message", {"to_id": "a1b2c3d4", "message": "Could you review the change to the broker's mail path "
                      "before I merge it? The tests pass on my side; I am mostly unsure about the retry."}),
    ("send_message", {"to_id": "reviewer", "message": "done, thanks", "reply_to": 1234}),
    ("list_peers", {"scope": "repo"}),
    ("list_peers", {}),
    ("check_messages", {}),
    ("set_summary", {"summary": "splitting bridge/session.py along its seams"}),
    ("wait_for_reply", {"message_id": 77, "timeout_seconds": 30}),
    ("claim_paths", {"paths": ["claudepeers/bridge/*.py"], "reason": "splitting modules", "ttl_seconds": 600}),
]
MALFORMED: list[tuple[str, dict[str, Any]]] = [
    ("send_message", {"to_id": "a1b2c3d4"}),
    ("list_peers", {"scope": "galaxy"}),
    ("set_name", {"name": ""}),
]


def single_validators() -> dict[str, Any]:
    """One validator per tool, compiled once, of the draft each schema declares (or the latest)."""
    return {name: validator_for(tool["inputSchema"])(tool["inputSchema"]) for name, tool in tools.TOOLS.items()}


def time_per_call(function: Callable[[], Any], calls: int, repeats: int) -> tuple[float, float]:
    """Median and fastest microseconds per call over ``repeats`` runs of ``calls`` calls."""
    runs = [seconds / calls * 1e6 for seconds in timeit.repeat(function, number=calls, repeat=repeats)]
    return statistics.median(runs), min(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20_000, help="calls per timed run")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per case")
    options = parser.parse_args()
    validators = single_validators()

    def quick(name: str, arguments: dict[str, Any]) -> Callable[[], Any]:
        return lambda: tools.validation_error(name, arguments)

    def single(name: str, arguments: dict[str, Any]) -> Callable[[], Any]:
        validator = validators[name]
        return lambda: sorted(validator.iter_errors(arguments), key=lambda error: list(error.path))

    def is_valid(name: str, arguments: dict[str, Any]) -> Callable[[], Any]:
        return lambda: validators[name].is_valid(arguments)

    totals: dict[str, list[float]] = {"quick+jsonschema": [], "jsonschema iter_errors": [], "jsonschema is_valid": []}
    print(f"{'case':44} {'quick+jsonschema':>18} {'jsonschema iter_errors':>24} {'jsonschema is_valid':>21}   (us per call: median / fastest)")
    for label, cases, calls in (("ok", WELL_FORMED, options.calls), ("bad", MALFORMED, max(1, options.calls // 10))):
        for name, arguments in cases:
            assert (tools.validation_error(name, arguments) is None) == (label == "ok"), (name, arguments)
            assert validators[name].is_valid(arguments) == (label == "ok"), (name, arguments)
            figures = {
                "quick+jsonschema": time_per_call(quick(name, arguments), calls, options.repeats),
                "jsonschema iter_errors": time_per_call(single(name, arguments), calls, options.repeats),
                "jsonschema is_valid": time_per_call(is_valid(name, arguments), calls, options.repeats),
            }
            if label == "ok":
                for way, (median, _) in figures.items():
                    totals[way].append(median)
            case = f"{label} {name}({', '.join(arguments)})"
            cells = [f"{median:8.2f} / {fastest:6.2f}" for median, fastest in figures.values()]
            print(f"{case[:44]:44} {cells[0]:>18} {cells[1]:>24} {cells[2]:>21}")
    means = {way: statistics.mean(values) for way, values in totals.items()}
    print("mean over the well-formed cases: " + ", ".join(f"{way} {value:.2f} us" for way, value in means.items()))
    print(f"single validator / quick check: {means['jsonschema iter_errors'] / means['quick+jsonschema']:.1f}x "
          f"(iter_errors), {means['jsonschema is_valid'] / means['quick+jsonschema']:.1f}x (is_valid)")


if __name__ == "__main__":
    main()
