"""Verifier side of the scenario vectors: replay every step and compare every output.

Each step runs against the library's public API (``Account``, ``Session``, ``PreKeyBundle``)
with a :class:`LabelledReplay` that hands out exactly the step's listed random values; the
replay must be exhausted afterwards. Outputs compared: wire bytes, plaintexts, session ids,
the captured handshake derivation, the ratchet snapshot, saved states; a failing step must
raise the listed error category and leave the session (``stateUnchanged``) or account
(``accountUnchanged``) byte-identical.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from e2ee.account import Account
from e2ee.config import SessionConfig
from e2ee.errors import E2EEError
from e2ee.limits import MAX_ONE_TIME_PREKEYS, MAX_SKIP
from e2ee.session import Session
from e2ee.vectors.common import (
    capture_handshake,
    category,
    hx,
    ratchet_snapshot,
    sending_message_key,
    unhex,
)
from e2ee.vectors.providers import LabelledReplay, ReplayError
from e2ee.wire.messages import PreKeyBundle

MAX_REPEAT = MAX_SKIP + 1
"""The most messages one ``encrypt`` step sends (its ``repeat``). Dropping MAX_SKIP + 1 messages
already makes a gap one larger than any receiver bridges (spec/limits.md), and that is the
largest ``repeat`` the generator writes; a larger one would only cost time."""

MAX_OPERATIONS = 20_000
"""The most operations the scenario tests of one file replay (see :func:`operations`): 2.5
times the 8,156 of the largest committed file, conversation_limits.json. Each test replays
its group's setup, so the work grows with setup length times the number of tests; without a
bound a file of a few MiB could ask for days."""


class Mismatch(AssertionError):
    """A replayed step produced something other than what its vector expects."""


def operations(steps: list[Any]) -> int:
    """What replaying ``steps`` costs: one per step, plus the ``repeat`` of an ``encrypt`` and
    the ``count`` of a ``generate_one_time_prekeys`` (values a step refuses before any work,
    being out of range or not integers, add nothing)."""
    total = 0
    for step in steps:
        total += 1
        if not isinstance(step, dict):
            continue
        for key, bound in (("repeat", MAX_REPEAT), ("count", MAX_ONE_TIME_PREKEYS)):
            value = step.get(key)
            if type(value) is int and 0 < value <= bound:
                total += value
    return total


@dataclass
class _World:
    accounts: dict[str, Account] = field(default_factory=dict)
    sessions: dict[str, Session] = field(default_factory=dict)


def play(steps: list[Any]) -> None:
    """Replay a list of steps from an empty world; raises :class:`Mismatch` on any difference."""
    world = _World()
    for index, step in enumerate(steps):
        try:
            _play_step(world, step)
        except (Mismatch, ReplayError) as exc:
            raise Mismatch(f"step {index} ({step.get('op')}): {exc}") from None


def _compare(what: str, expected: Any, got: Any) -> None:
    if expected != got:
        if isinstance(expected, dict) and isinstance(got, dict):
            keys = sorted(k for k in set(expected) | set(got) if expected.get(k) != got.get(k))
            raise Mismatch(f"{what} differs in {keys}")
        raise Mismatch(f"{what}: expected {_short(expected)}, got {_short(got)}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _play_step(world: _World, step: Any) -> None:
    op = step["op"]
    expect = step["expect"]
    provider = LabelledReplay(step.get("random", []), step.get("kemEncapsulations", []))
    handler = _HANDLERS.get(op)
    if handler is None:
        raise Mismatch(f"unknown operation {op!r}")
    guard = _guard(world, step)
    before = guard() if guard is not None and "error" in expect else None
    try:
        outputs = handler(world, step, provider)
    except E2EEError as exc:
        got = category(exc)
        if "error" not in expect:
            raise Mismatch(f"raised {got} ({exc}), expected success") from None
        _compare("error category", expect["error"], got)
        for flag in ("stateUnchanged", "accountUnchanged"):
            if expect.get(flag) and (guard is None or guard() != before):
                raise Mismatch(f"{flag} does not hold") from None
        provider.check_exhausted()
        return
    if "error" in expect:
        raise Mismatch(f"succeeded, expected {expect['error']}")
    provider.check_exhausted()
    for key, value in expect.items():
        if key not in outputs:
            raise Mismatch(f"the vector expects {key!r}, which this step does not produce")
        _compare(key, value, outputs[key])


def _guard(world: _World, step: Any) -> Any:
    """What must not change when the step fails: the account or the session of the party."""
    party = step.get("party")
    if step["op"] in ("start_session", "accept_session"):
        account = world.accounts.get(party)
        return account.to_bytes if account is not None else None
    session = world.sessions.get(party)
    return session.to_bytes if session is not None else None


def _account(world: _World, party: str) -> Account:
    if party not in world.accounts:
        raise Mismatch(f"{party} has no account")
    return world.accounts[party]


def _session(world: _World, party: str) -> Session:
    if party not in world.sessions:
        raise Mismatch(f"{party} has no session")
    return world.sessions[party]


def _generate_account(world: _World, step: Any, provider: LabelledReplay) -> dict[str, Any]:
    account = Account.generate(
        provider=provider, now=int(step["now"]), post_quantum=bool(step["postQuantum"])
    )
    world.accounts[step["party"]] = account
    return {"identityKey": hx(account.identity_key)}


def _one_time_prekeys(world: _World, step: Any, provider: LabelledReplay) -> dict[str, Any]:
    _account(world, step["party"]).generate_one_time_prekeys(int(step["count"]), provider=provider)
    return {}


def _rotate(world: _World, step: Any, provider: LabelledReplay) -> dict[str, Any]:
    _account(world, step["party"]).rotate_signed_prekey(provider=provider, now=int(step["now"]))
    return {}


def _bundle(world: _World, step: Any, provider: LabelledReplay) -> dict[str, Any]:
    return {"bundle": hx(_account(world, step["party"]).prekey_bundle().to_bytes())}


def _save_account(world: _World, step: Any, provider: LabelledReplay) -> dict[str, Any]:
    return {"state": hx(_account(world, step["party"]).to_bytes())}


def _load_account(world: _World, step: Any, provider: LabelledReplay) -> dict[str, Any]:
    account = Account.from_bytes(unhex(step["state"]))
    world.accounts[step["party"]] = account
    return {"identityKey": hx(account.identity_key)}


def _start(world: _World, step: Any, provider: LabelledReplay) -> dict[str, Any]:
    config = step["config"]
    account = _account(world, step["party"])
    with capture_handshake() as calls:
        session = account.start_session(
            PreKeyBundle.from_bytes(unhex(step["bundle"])),
            config=SessionConfig(
                header_encryption=bool(config["headerEncryption"]),
                allow_x3dh=bool(config["allowX3dh"]),
            ),
            provider=provider,
            now=int(step["now"]),
        )
    world.sessions[step["party"]] = session
    return {
        "sessionId": hx(session.session_id),
        "handshake": calls[0] if calls else None,
        "ratchet": ratchet_snapshot(session),
    }


def _accept(world: _World, step: Any, provider: LabelledReplay) -> dict[str, Any]:
    config = step["config"]
    account = _account(world, step["party"])
    with capture_handshake() as calls:
        session, plaintext = account.accept_session(
            unhex(step["message"]),
            config=SessionConfig(require_header_encryption=bool(config["requireHeaderEncryption"])),
            provider=provider,
            now=int(step["now"]),
        )
    world.sessions[step["party"]] = session
    return {
        "plaintext": hx(plaintext),
        "sessionId": hx(session.session_id),
        "handshake": calls[0] if calls else None,
        "ratchet": ratchet_snapshot(session),
    }


def _encrypt(world: _World, step: Any, provider: LabelledReplay) -> dict[str, Any]:
    session = _session(world, step["party"])
    plaintext = unhex(step["plaintext"])
    message_key = sending_message_key(session)
    repeat = step.get("repeat", 1)
    if "repeat" in step and (type(repeat) is not int or not 2 <= repeat <= MAX_REPEAT):
        raise Mismatch(f"repeat must be an integer from 2 to {MAX_REPEAT}")
    messages = [session.encrypt(plaintext, provider=provider) for _ in range(repeat)]
    out: dict[str, Any] = {"ratchet": ratchet_snapshot(session)}
    if repeat == 1:
        out["message"] = hx(messages[0])
        out["messageKey"] = None if message_key is None else hx(message_key)
    return out


def _decrypt(world: _World, step: Any, provider: LabelledReplay) -> dict[str, Any]:
    session = _session(world, step["party"])
    plaintext = session.decrypt(unhex(step["message"]), provider=provider)
    return {"plaintext": hx(plaintext), "ratchet": ratchet_snapshot(session)}


def _save_session(world: _World, step: Any, provider: LabelledReplay) -> dict[str, Any]:
    key = step.get("stateKey")
    session = _session(world, step["party"])
    return {
        "state": hx(session.to_bytes(key=None if key is None else unhex(key), provider=provider))
    }


def _load_session(world: _World, step: Any, provider: LabelledReplay) -> dict[str, Any]:
    key = step.get("stateKey")
    session = Session.from_bytes(unhex(step["state"]), key=None if key is None else unhex(key))
    world.sessions[step["party"]] = session
    return {"sessionId": hx(session.session_id), "ratchet": ratchet_snapshot(session)}


_HANDLERS = {
    "generate_account": _generate_account,
    "generate_one_time_prekeys": _one_time_prekeys,
    "rotate_signed_prekey": _rotate,
    "prekey_bundle": _bundle,
    "save_account": _save_account,
    "load_account": _load_account,
    "start_session": _start,
    "accept_session": _accept,
    "encrypt": _encrypt,
    "decrypt": _decrypt,
    "save_session": _save_session,
    "load_session": _load_session,
}
