"""Generator side of the scenario vectors (handshakes and conversations).

A :class:`Scenario` runs the real library step by step with a :class:`LabelledRecorder` and
writes each step as vector JSON: the operation, its inputs (including every random value it
drew, named by purpose), and what came out (wire bytes, keys, the error category). Every step
states the outcome the author intended (``error=...`` or success) and the recorder fails loudly
when the library disagrees, so a vector always records intent, not accident.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from e2ee.account import Account
from e2ee.config import SessionConfig
from e2ee.errors import E2EEError
from e2ee.session import Session
from e2ee.vectors.common import (
    JSON,
    NOW,
    capture_handshake,
    category,
    hx,
    ratchet_snapshot,
    sending_message_key,
)
from e2ee.vectors.providers import LabelledRecorder
from e2ee.wire.messages import PreKeyBundle, parse_message


class IntentError(AssertionError):
    """The library did not do what the vector's author said it would."""


@dataclass
class _Party:
    name: str
    account: Account | None = None
    session: Session | None = None
    ratchet_keys: int = 0
    nonces: int = 0
    state_nonces: int = 0


@dataclass
class Scenario:
    namespace: str
    steps: list[JSON] = field(default_factory=list)
    parties: dict[str, _Party] = field(default_factory=dict)
    memo: dict[str, bytes] = field(default_factory=dict)
    """Values a setup leaves for the tests (bundles, messages)."""

    def __post_init__(self) -> None:
        self.provider = LabelledRecorder(self.namespace)

    # --- helpers ------------------------------------------------------------------------

    def party(self, name: str) -> _Party:
        return self.parties.setdefault(name, _Party(name))

    def account(self, name: str) -> Account:
        account = self.party(name).account
        assert account is not None, f"{name} has no account"
        return account

    def session(self, name: str) -> Session:
        session = self.party(name).session
        assert session is not None, f"{name} has no session"
        return session

    def set_namespace(self, namespace: str) -> None:
        self.namespace = namespace
        self.provider.namespace = namespace

    def _ratchet_label(self, name: str) -> str:
        return f"{name} ratchet key #{self.party(name).ratchet_keys + 1} private"

    def _count_ratchet(self, name: str, drawn: list[JSON]) -> None:
        self.party(name).ratchet_keys += sum(1 for d in drawn if "ratchet key" in d["label"])

    def _run(
        self,
        step: JSON,
        error: str | None,
        action: Callable[[], JSON],
        unchanged: Callable[[], bytes] | None = None,
        unchanged_key: str = "stateUnchanged",
    ) -> bool:
        """Run ``action``; record its outputs or its error; check the author's intent."""
        before = unchanged() if unchanged is not None else None
        try:
            outputs = action()
        except E2EEError as exc:
            got = category(exc)
            random, encapsulations = self.provider.take()
            if got != error:
                raise IntentError(
                    f"{self.namespace}: step {len(self.steps)} {step['op']} raised {got}, "
                    f"expected {error or 'success'}: {exc}"
                ) from exc
            expect: JSON = {"error": got}
            if unchanged is not None:
                if unchanged() != before:
                    raise IntentError(f"{self.namespace}: state changed by a failed step") from exc
                expect[unchanged_key] = True
            self._append(step, random, encapsulations, expect)
            return False
        random, encapsulations = self.provider.take()
        if error is not None:
            raise IntentError(
                f"{self.namespace}: step {len(self.steps)} {step['op']} succeeded, expected {error}"
            )
        self._append(step, random, encapsulations, outputs)
        return True

    def _append(
        self, step: JSON, random: list[JSON], encapsulations: list[JSON], expect: JSON
    ) -> None:
        step["random"] = random
        if encapsulations:
            step["kemEncapsulations"] = encapsulations
        step["expect"] = expect
        self.steps.append(step)
        if "party" in step:
            self._count_ratchet(step["party"], random)

    # --- accounts -----------------------------------------------------------------------

    def generate_account(
        self, name: str, *, post_quantum: bool = True, now: int = NOW, comment: str = ""
    ) -> None:
        labels = [f"{name} identity seed", f"{name} signed prekey #1 private"]
        if post_quantum:
            labels.append(f"{name} ML-KEM prekey #2 seed")
        self.provider.expect(labels)
        step: JSON = {"op": "generate_account", "party": name, "postQuantum": post_quantum}
        step["now"] = now
        _comment(step, comment)

        def action() -> JSON:
            account = Account.generate(provider=self.provider, now=now, post_quantum=post_quantum)
            self.party(name).account = account
            return {"identityKey": hx(account.identity_key)}

        self._run(step, None, action)

    def one_time_prekeys(self, name: str, count: int) -> None:
        account = self.account(name)
        labels: list[str] = []
        next_id = account._next_prekey_id
        for _ in range(count):
            labels.append(f"{name} one-time prekey #{next_id} private")
            next_id += 1
            if account.post_quantum:
                labels.append(f"{name} one-time ML-KEM prekey #{next_id} seed")
                next_id += 1
        self.provider.expect(labels)
        step: JSON = {"op": "generate_one_time_prekeys", "party": name, "count": count}

        def action() -> JSON:
            account.generate_one_time_prekeys(count, provider=self.provider)
            return {}

        self._run(step, None, action)

    def _signed_prekey_labels(self, name: str) -> list[str]:
        """The draws of a new signed prekey (a rotation, asked for or automatic)."""
        account = self.account(name)
        next_id = account._next_prekey_id
        labels = [f"{name} signed prekey #{next_id} private"]
        if account.post_quantum:
            labels.append(f"{name} ML-KEM prekey #{next_id + 1} seed")
        return labels

    def rotate(self, name: str, *, now: int) -> None:
        account = self.account(name)
        self.provider.expect(self._signed_prekey_labels(name))
        step: JSON = {"op": "rotate_signed_prekey", "party": name, "now": now}

        def action() -> JSON:
            account.rotate_signed_prekey(provider=self.provider, now=now)
            return {}

        self._run(step, None, action)

    def bundle(self, name: str, *, comment: str = "") -> bytes:
        out: list[bytes] = []
        self.provider.expect([])
        step: JSON = {"op": "prekey_bundle", "party": name}
        _comment(step, comment)

        def action() -> JSON:
            data = self.account(name).prekey_bundle().to_bytes()
            out.append(data)
            return {"bundle": hx(data)}

        self._run(step, None, action)
        return out[0]

    def save_account(self, name: str) -> bytes:
        out: list[bytes] = []
        self.provider.expect([])

        def action() -> JSON:
            out.append(self.account(name).to_bytes())
            return {"state": hx(out[0])}

        self._run({"op": "save_account", "party": name}, None, action)
        return out[0]

    def load_account(self, name: str, state: bytes, *, error: str | None = None) -> None:
        self.provider.expect([])

        def action() -> JSON:
            self.party(name).account = Account.from_bytes(state)
            return {"identityKey": hx(self.account(name).identity_key)}

        self._run({"op": "load_account", "party": name, "state": hx(state)}, error, action)

    # --- handshake ----------------------------------------------------------------------

    def start(
        self,
        name: str,
        bundle: bytes,
        *,
        header_encryption: bool = True,
        allow_x3dh: bool = False,
        now: int = NOW,
        error: str | None = None,
        comment: str = "",
        base_key_label: str = "",
    ) -> None:
        """Start a session. ``base_key_label`` names the base key's draw (default ``<name>
        base key private``): a second handshake in one test needs a label of its own, or it
        draws the same base key again."""
        account = self.account(name)
        kem_labels: list[str] = []
        try:
            parsed = PreKeyBundle.from_bytes(bundle)
            kem_id = parsed.one_time_kem_prekey_id
            if kem_id is None:
                kem_id = parsed.kem_prekey_id
            kem_labels = [f"{name} ML-KEM encapsulation to prekey #{kem_id}"]
        except E2EEError:
            pass
        base_key = base_key_label or f"{name} base key private"
        self.provider.expect([base_key, self._ratchet_label(name)], kem_labels)
        config = {"headerEncryption": header_encryption, "allowX3dh": allow_x3dh}
        step: JSON = {"op": "start_session", "party": name, "bundle": hx(bundle)}
        step.update({"config": config, "now": now})
        _comment(step, comment)

        def action() -> JSON:
            with capture_handshake() as calls:
                session = account.start_session(
                    PreKeyBundle.from_bytes(bundle),
                    config=SessionConfig(
                        header_encryption=header_encryption, allow_x3dh=allow_x3dh
                    ),
                    provider=self.provider,
                    now=now,
                )
            self.party(name).session = session
            return {
                "sessionId": hx(session.session_id),
                "handshake": calls[0],
                "ratchet": ratchet_snapshot(session),
            }

        self._run(step, error, action, account.to_bytes, "accountUnchanged")

    def accept(
        self,
        name: str,
        message: bytes,
        *,
        require_header_encryption: bool = False,
        now: int = NOW,
        error: str | None = None,
        comment: str = "",
        rotates: bool = False,
        debug: bool = True,
    ) -> bytes | None:
        """Accept an initial message. ``rotates``: the author expects it to fill the signed
        prekey's replay memory, so that the account rotates its signed prekey (and draws the
        new one's keys) as it commits. ``debug=False`` leaves the debug outputs (``handshake``,
        ``ratchet``) out of ``expect``, for the many bulk steps of a file that must stay small."""
        account = self.account(name)
        labels = [self._ratchet_label(name)]
        if rotates:
            labels += self._signed_prekey_labels(name)
        self.provider.expect(labels)
        step: JSON = {"op": "accept_session", "party": name, "message": hx(message)}
        step["config"] = {"requireHeaderEncryption": require_header_encryption}
        step["now"] = now
        _comment(step, comment)
        out: list[bytes] = []

        def action() -> JSON:
            before = account.signed_prekey_bundle().signed_prekey_id
            with capture_handshake() as calls:
                session, plaintext = account.accept_session(
                    message,
                    config=SessionConfig(require_header_encryption=require_header_encryption),
                    provider=self.provider,
                    now=now,
                )
            rotated = account.signed_prekey_bundle().signed_prekey_id != before
            if rotated != rotates:
                raise IntentError(
                    f"{self.namespace}: accept_session "
                    f"{'did not rotate' if rotates else 'rotated'} the signed prekey"
                )
            self.party(name).session = session
            out.append(plaintext)
            result: JSON = {"plaintext": hx(plaintext), "sessionId": hx(session.session_id)}
            if debug:
                result["handshake"] = calls[0]
                result["ratchet"] = ratchet_snapshot(session)
            return result

        ok = self._run(step, error, action, account.to_bytes, "accountUnchanged")
        return out[0] if ok else None

    # --- messages -----------------------------------------------------------------------

    def encrypt(self, name: str, plaintext: bytes, *, repeat: int = 1, comment: str = "") -> bytes:
        """Encrypt (``repeat`` times: the messages of a repeated step are not kept)."""
        session = self.session(name)
        party = self.party(name)
        labels: list[str] = []
        if session.header_encryption:
            labels = [f"{name} header nonce #{party.nonces + i + 1}" for i in range(repeat)]
        self.provider.expect(labels)
        step: JSON = {"op": "encrypt", "party": name, "plaintext": hx(plaintext)}
        if repeat != 1:
            step["repeat"] = repeat
        _comment(step, comment)
        out: list[bytes] = []

        def action() -> JSON:
            message_key = sending_message_key(session)
            for _ in range(repeat):
                out.append(session.encrypt(plaintext, provider=self.provider))
            result: JSON = {"ratchet": ratchet_snapshot(session)}
            if repeat == 1:
                assert message_key is not None
                result["message"] = hx(out[0])
                result["messageKey"] = hx(message_key)
            return result

        self._run(step, None, action)
        party.nonces += len(labels)
        return out[-1]

    def encrypt_many(self, name: str, plaintexts: list[bytes]) -> list[bytes]:
        return [self.encrypt(name, p) for p in plaintexts]

    def decrypt(
        self, name: str, message: bytes, *, error: str | None = None, comment: str = ""
    ) -> bytes | None:
        session = self.session(name)
        self.provider.expect([self._ratchet_label(name)])
        step: JSON = {"op": "decrypt", "party": name, "message": hx(message)}
        _comment(step, comment)
        out: list[bytes] = []

        def action() -> JSON:
            plaintext = session.decrypt(message, provider=self.provider)
            out.append(plaintext)
            return {"plaintext": hx(plaintext), "ratchet": ratchet_snapshot(session)}

        ok = self._run(step, error, action, session.to_bytes)
        return out[0] if ok else None

    # --- persistence --------------------------------------------------------------------

    def save_session(self, name: str, *, key: bytes | None = None, comment: str = "") -> bytes:
        session = self.session(name)
        party = self.party(name)
        labels = [] if key is None else [f"{name} state nonce #{party.state_nonces + 1}"]
        self.provider.expect(labels)
        step: JSON = {
            "op": "save_session",
            "party": name,
            "stateKey": None if key is None else hx(key),
        }
        _comment(step, comment)
        out: list[bytes] = []

        def action() -> JSON:
            out.append(session.to_bytes(key=key, provider=self.provider))
            return {"state": hx(out[0])}

        self._run(step, None, action)
        party.state_nonces += len(labels)
        return out[0]

    def load_session(
        self,
        name: str,
        state: bytes,
        *,
        key: bytes | None = None,
        error: str | None = None,
        comment: str = "",
    ) -> None:
        party = self.party(name)
        self.provider.expect([])
        step: JSON = {"op": "load_session", "party": name, "state": hx(state)}
        step["stateKey"] = None if key is None else hx(key)
        _comment(step, comment)

        def action() -> JSON:
            session = Session.from_bytes(state, key=key)
            party.session = session
            return {"sessionId": hx(session.session_id), "ratchet": ratchet_snapshot(session)}

        current = party.session
        self._run(step, error, action, current.to_bytes if current is not None else None)


def _comment(step: JSON, comment: str) -> None:
    if comment:
        step["comment"] = comment


def is_initial(message: bytes) -> bool:
    return parse_message(message).initial is not None


# --- assembling scenario test groups -------------------------------------------------------

SetupFn = Callable[[Scenario], None]
TestFn = Callable[[Scenario], None]


@dataclass
class ScenarioCase:
    name: str
    comment: str
    flags: list[str]
    run: TestFn


def scenario_group(
    name: str, comment: str, setup: SetupFn | None, cases: list[ScenarioCase]
) -> JSON:
    """One test group: shared setup steps (replayed before every test) and the tests."""
    setup_steps: list[JSON] | None = None
    tests: list[JSON] = []
    for case in cases:
        sc = Scenario(name)
        if setup is not None:
            setup(sc)
        count = len(sc.steps)
        if setup_steps is None:
            setup_steps = sc.steps[:count]
        elif sc.steps[:count] != setup_steps:  # pragma: no cover - determinism guard
            raise IntentError(f"{name}: setup is not deterministic")
        sc.set_namespace(f"{name}/{case.name}")
        case.run(sc)
        steps = sc.steps[count:]
        errors = sorted({s["expect"]["error"] for s in steps if "error" in s["expect"]})
        if len(errors) > 1:
            raise IntentError(f"{name}/{case.name}: several error categories {errors}")
        test: JSON = {
            "comment": case.comment,
            "flags": case.flags,
            "result": "invalid" if errors else "valid",
            "steps": steps,
        }
        if errors:
            test["error"] = errors[0]
        tests.append(test)
    return {
        "type": "ScenarioTest",
        "name": name,
        "comment": comment,
        "setup": setup_steps or [],
        "tests": tests,
    }
