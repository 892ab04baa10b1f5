"""Which ``result`` a test case may declare, given its group type (test_vectors/README.md).

Shared by ``e2ee vectors verify`` and the conformance runner, so that a vector file cannot
declare an outcome its check never looks at: a ``KdfCk`` case marked ``invalid`` would otherwise
be run as a plain computation and pass, and a scenario marked ``valid`` whose steps expect an
error (or ``invalid`` with another category than its steps) would say one thing in its header
and test another.
"""

from __future__ import annotations

from typing import Any

COMPUTATIONS = frozenset(
    {
        "XdhPublicKey",
        "IdentityKeyDerivation",
        "HkdfTest",
        "MessageAeadEncrypt",
        "HeaderAeadEncrypt",
        "KdfRk",
        "KdfRkHe",
        "DhRatchetStep",
        "KdfCk",
        "KdfCkChain",
        "MessageKeyExpansion",
        "HandshakeDerive",
    }
)
"""Group types whose cases only compute values from their inputs: nothing in them can fail, so
their only possible result is ``valid``."""

SCENARIO = "ScenarioTest"


def _step_errors(steps: Any) -> list[Any] | None:
    """The ``expect.error`` of each step that has one; None when ``steps`` is not an array of
    step objects with an ``expect`` object."""
    if not isinstance(steps, list):
        return None
    errors = []
    for step in steps:
        expect = step.get("expect") if isinstance(step, dict) else None
        if not isinstance(expect, dict):
            return None
        if "error" in expect:
            errors.append(expect["error"])
    return errors


def result_problem(group: dict[str, Any], test: dict[str, Any]) -> str | None:
    """Why ``test``'s ``result`` (and ``error``) cannot be what its group's type checks, or
    None.

    The caller has checked that ``result`` is one of valid, invalid, acceptable.
    """
    group_type, result = group.get("type"), test.get("result")
    if group_type in COMPUTATIONS and result != "valid":
        return f"a {group_type} case only computes values, so its result must be valid"
    if group_type != SCENARIO:
        return None
    setup, own = _step_errors(group.get("setup")), _step_errors(test.get("steps"))
    if setup is None or own is None:
        return "its setup and steps must be arrays of steps with an expect object"
    if setup:
        return "a setup step expects an error (setup steps never fail)"
    if result == "invalid":
        if not own:
            return "an invalid scenario has no step that expects an error"
        if any(error != test.get("error") for error in own):
            return "its steps expect another error category than the test's error"
    elif own:
        return f"a scenario marked {result} has a step that expects an error"
    return None


__all__ = ["COMPUTATIONS", "result_problem"]
