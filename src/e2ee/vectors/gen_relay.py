"""Generator of the relay's signed structures: registration tickets, signed device lists and
the login challenge response (spec/relay.md sections 3 and 4.1, spec/client.md section 4).

The bytes are assembled by hand (CBOR heads from :mod:`e2ee.vectors.gen_wire`) and signed with
the reference Ed25519 of :mod:`e2ee.vectors.reference`: neither e2ee's codec nor its relay,
identity or crypto modules are used here, so a bug there cannot write its own expected bytes.
"""

from __future__ import annotations

from e2ee import limits
from e2ee.vectors import reference as ref
from e2ee.vectors.common import JSON, NOW, envelope, hx, note
from e2ee.vectors.gen_primitives import case, flip, rnd
from e2ee.vectors.gen_wire import array, bstr, cmap, uint

ORIGIN = "https://relay.example:443"
MAX_TICKET_LIFETIME = 24 * 3600
CLOCK_SKEW = 300
MAX_UINT32 = 2**32 - 1

RELAY_NOTES = {
    "Valid": note("BASIC", "The exact bytes a conforming implementation produces and accepts."),
    "EdgeCase": note("EDGE_CASE", "A value at the limit of its range (still valid)."),
    "ModifiedSignature": note("MODIFIED_PARAMETER", "One bit of the signature is flipped."),
    "WrongSigner": note("AUTH_BYPASS", "A genuine signature by another key."),
    "WrongLabel": note(
        "AUTH_BYPASS",
        "A genuine signature by the right key over the same bytes under another purpose label "
        "(or none): labels keep a signature from being valid for another structure.",
    ),
    "WrongOrigin": note(
        "AUTH_BYPASS",
        "Made for another relay origin (scheme://host:port): a ticket or login response a "
        "phishing relay obtained must be useless at the real one.",
    ),
    "WrongSubject": note(
        "AUTH_BYPASS", "Made for another user id, user key, device or challenge than checked."
    ),
    "Expired": note("DEFINED", "Outside the validity window at the given relay time `now`."),
    "LifetimeTooLong": note(
        "DEFINED", f"Valid for longer than the relay's maximum lifetime ({MAX_TICKET_LIFETIME} s)."
    ),
    "NonCanonical": note(
        "CAN_OF_WORMS",
        "Not canonical CBOR (a non-minimal head, unsorted map keys), signed as it stands: "
        "refused whether or not the signature verifies.",
    ),
    "TrailingBytes": note("MODIFIED_PARAMETER", "Bytes follow the structure."),
    "WrongType": note("MODIFIED_PARAMETER", "The structure-type field names another structure."),
    "WrongItemType": note("MODIFIED_PARAMETER", "A field has the wrong CBOR type (re-signed)."),
    "UnknownVersion": note("DEFINED", "A version other than 1."),
    "MissingField": note("MODIFIED_PARAMETER", "A required field is absent (re-signed)."),
    "UnknownField": note("MODIFIED_PARAMETER", "A map key the format does not define (re-signed)."),
    "WrongLength": note("MODIFIED_PARAMETER", "A key, signature or text field has a bad size."),
    "OutOfRange": note("DEFINED", "An integer outside its range, or times not in order."),
    "NotUtf8": note("MODIFIED_PARAMETER", "A user id or origin that is not UTF-8."),
    "DeviceOrder": note(
        "MODIFIED_PARAMETER", "Devices not sorted by id, a device id twice, or a key twice."
    ),
}


def _sign(seed: bytes, label: bytes, body: bytes) -> bytes:
    return ref.ed25519_sign(seed, label + body)


def _signed(version: int, kind: int, body: bytes, signature: bytes) -> bytes:
    return cmap(
        [
            (uint(0), uint(version)),
            (uint(1), uint(kind)),
            (uint(2), bstr(body)),
            (uint(3), bstr(signature)),
        ]
    )


# --- registration tickets -------------------------------------------------------------------


def _ticket_pairs(
    origin: bytes, user: bytes, key: bytes, issued: int, expires: int
) -> list[tuple[bytes, bytes]]:
    return [
        (uint(0), uint(1)),
        (uint(1), uint(limits.TYPE_REGISTRATION_TICKET)),
        (uint(2), bstr(origin)),
        (uint(3), bstr(user)),
        (uint(4), bstr(key)),
        (uint(5), uint(issued)),
        (uint(6), uint(expires)),
    ]


def _tickets() -> JSON:
    ns = "relay tickets"
    seed, other = rnd(ns, "authority seed"), rnd(ns, "other authority seed")
    user_key = ref.ed25519_public_key(rnd(ns, "alice user seed"))
    label = limits.SIG_LABEL_REGISTRATION_TICKET

    def ticket(body: bytes, *, signer: bytes = seed, sig_label: bytes = label) -> bytes:
        return _signed(
            1, limits.TYPE_SIGNED_REGISTRATION_TICKET, body, _sign(signer, sig_label, body)
        )

    issued, expires = NOW - 60, NOW + 3600
    base = cmap(_ticket_pairs(ORIGIN.encode(), b"alice", user_key, issued, expires))
    good = ticket(base)
    context = {"userId": "alice", "userKey": hx(user_key), "now": NOW}
    tests: list[JSON] = []

    def valid(
        comment: str, flags: list[str], origin: str, user: str, iss: int, exp: int, now: int
    ) -> None:
        body = cmap(_ticket_pairs(origin.encode(), user.encode(), user_key, iss, exp))
        fields = {
            "origin": origin,
            "userId": user,
            "userKey": hx(user_key),
            "issued": iss,
            "expires": exp,
        }
        tests.append(
            case(
                comment,
                flags,
                ticket=hx(ticket(body)),
                fields=fields,
                userId=user,
                userKey=hx(user_key),
                relayOrigin=origin,
                now=now,
            )
        )

    valid("a ticket valid for an hour", ["Valid"], ORIGIN, "alice", issued, expires, NOW)
    valid(
        "relay clock 300 s behind issued (the skew allowed)",
        ["EdgeCase"],
        ORIGIN,
        "alice",
        NOW,
        NOW + 60,
        NOW - CLOCK_SKEW,
    )
    valid(
        "last second of a ticket valid for exactly the maximum lifetime",
        ["EdgeCase"],
        ORIGIN,
        "alice",
        NOW,
        NOW + MAX_TICKET_LIFETIME,
        NOW + MAX_TICKET_LIFETIME - 1,
    )
    valid(
        "expires at 2^32 - 1 (four-byte integer heads)",
        ["EdgeCase"],
        ORIGIN,
        "zo\u00eb \U0001f600",
        MAX_UINT32 - 3600,
        MAX_UINT32,
        MAX_UINT32 - 1,
    )
    long_origin = "https://" + "r" * 498 + ":65535"
    valid(
        "the largest ticket: a 512-byte origin and a 256-byte user id",
        ["EdgeCase"],
        long_origin,
        "u" * 256,
        issued,
        expires,
        NOW,
    )

    def bad(
        comment: str,
        flags: list[str],
        data: bytes,
        error: str,
        *,
        relay_origin: str = ORIGIN,
        **over: object,
    ) -> None:
        tests.append(
            case(
                comment,
                flags,
                "invalid",
                ticket=hx(data),
                error=error,
                code="bad_ticket",
                relayOrigin=relay_origin,
                **{**context, **over},
            )
        )

    malformed, forbidden = "relay_bad_request", "relay_forbidden"
    pairs = _ticket_pairs(ORIGIN.encode(), b"alice", user_key, issued, expires)

    def with_pair(key: int, value: bytes | None) -> bytes:
        out = [(k, v) for k, v in pairs if k != uint(key)]
        if value is not None:
            out.append((uint(key), value))
            out.sort(key=lambda kv: kv[0])
        return cmap(out)

    bad("one byte after the ticket", ["TrailingBytes"], good + b"\x00", malformed)
    bad(
        "one byte after the body inside field 2 (re-signed)",
        ["TrailingBytes"],
        ticket(base + b"\x00"),
        malformed,
    )
    bad(
        "version as a two-byte head 18 01 (non-minimal, re-signed)",
        ["NonCanonical"],
        ticket(cmap([(uint(0), uint(1, 1)), *pairs[1:]])),
        malformed,
    )
    bad(
        "body keys 6 before 5 (unsorted, re-signed)",
        ["NonCanonical"],
        ticket(cmap([*pairs[:5], pairs[6], pairs[5]])),
        malformed,
    )
    bad(
        "outer type 33 (a signed device list)",
        ["WrongType"],
        _signed(1, limits.TYPE_SIGNED_DEVICE_LIST, base, _sign(seed, label, base)),
        malformed,
    )
    bad(
        "body type 32 (a device list, re-signed)",
        ["WrongType"],
        ticket(with_pair(1, uint(limits.TYPE_DEVICE_LIST))),
        malformed,
    )
    bad(
        "outer version 2",
        ["UnknownVersion"],
        _signed(2, limits.TYPE_SIGNED_REGISTRATION_TICKET, base, _sign(seed, label, base)),
        malformed,
    )
    bad("body without expires (re-signed)", ["MissingField"], ticket(with_pair(6, None)), malformed)
    body7 = cmap([*pairs, (uint(7), uint(0))])
    bad("body with a field 7 (re-signed)", ["UnknownField"], ticket(body7), malformed)
    bad(
        "a 63-byte signature",
        ["WrongLength"],
        _signed(1, limits.TYPE_SIGNED_REGISTRATION_TICKET, base, _sign(seed, label, base)[:63]),
        malformed,
    )
    bad(
        "a 31-byte user key (re-signed)",
        ["WrongLength"],
        ticket(with_pair(4, bstr(user_key[:31]))),
        malformed,
    )
    bad("an empty origin (re-signed)", ["WrongLength"], ticket(with_pair(2, bstr(b""))), malformed)
    bad(
        "a 257-byte user id (re-signed)",
        ["WrongLength"],
        ticket(with_pair(3, bstr(b"u" * 257))),
        malformed,
        userId="u" * 257,
    )
    bad(
        "issued equal to expires (re-signed)",
        ["OutOfRange"],
        ticket(with_pair(5, uint(expires))),
        malformed,
    )
    bad(
        "expires 2^32, beyond 2^32 - 1 (re-signed)",
        ["OutOfRange"],
        ticket(cmap(_ticket_pairs(ORIGIN.encode(), b"alice", user_key, 2**32 - 60, 2**32))),
        malformed,
    )
    bad(
        "a user id that is not UTF-8 (re-signed)",
        ["NotUtf8"],
        ticket(with_pair(3, bstr(b"alic\xff"))),
        malformed,
    )
    bad(
        "user id as a text string (major type 3, re-signed)",
        ["WrongItemType"],
        ticket(with_pair(3, ref.cbor_head(3, 5) + b"alice")),
        malformed,
    )
    # well formed, refused on what it says (403)
    bad(
        "bit 0 of the signature's first byte flipped",
        ["ModifiedSignature"],
        flip(good, len(good) - 64),
        forbidden,
    )
    bad(
        "bit 7 of the signature's last byte flipped",
        ["ModifiedSignature"],
        flip(good, len(good) - 1, 7),
        forbidden,
    )
    bad("signed by another authority", ["WrongSigner"], ticket(base, signer=other), forbidden)
    bad(
        "signed under the device-list label",
        ["WrongLabel"],
        ticket(base, sig_label=limits.SIG_LABEL_DEVICE_LIST),
        forbidden,
    )
    bad("signed without a label", ["WrongLabel"], ticket(base, sig_label=b""), forbidden)
    bad(
        "a genuine ticket for another relay",
        ["WrongOrigin"],
        good,
        forbidden,
        relay_origin="https://relay.example.net:443",
    )
    bad(
        "a genuine ticket, the relay's origin differs in the port",
        ["WrongOrigin"],
        good,
        forbidden,
        relay_origin="https://relay.example:8443",
    )
    bad("a genuine ticket, sent with bob's list", ["WrongSubject"], good, forbidden, userId="bob")
    other_key = ref.ed25519_public_key(rnd(ns, "mallory user seed"))
    bad(
        "a genuine ticket, sent with a list of another user key",
        ["WrongSubject"],
        good,
        forbidden,
        userKey=hx(other_key),
    )
    long_body = cmap(
        _ticket_pairs(ORIGIN.encode(), b"alice", user_key, NOW, NOW + MAX_TICKET_LIFETIME + 1)
    )
    bad(
        "valid for the maximum lifetime plus one second",
        ["LifetimeTooLong"],
        ticket(long_body),
        forbidden,
    )
    bad("relay time equal to expires", ["Expired"], good, forbidden, now=expires)
    bad(
        "relay time 301 s before issued",
        ["Expired"],
        good,
        forbidden,
        now=issued - CLOCK_SKEW - 1,
    )
    return {
        "type": "RegistrationTicketVerify",
        "authoritySeed": hx(seed),
        "authorityKey": hx(ref.ed25519_public_key(seed)),
        "label": hx(label),
        "maxLifetime": MAX_TICKET_LIFETIME,
        "clockSkew": CLOCK_SKEW,
        "tests": tests,
    }


# --- signed device lists --------------------------------------------------------------------


def _list_pairs(
    user: bytes, key: bytes, counter: bytes, devices: list[tuple[int, bytes]]
) -> list[tuple[bytes, bytes]]:
    return [
        (uint(0), uint(1)),
        (uint(1), uint(limits.TYPE_DEVICE_LIST)),
        (uint(2), bstr(user)),
        (uint(3), bstr(key)),
        (uint(4), counter),
        (uint(5), array([array([uint(d), bstr(k)]) for d, k in devices])),
    ]


def _device_lists() -> JSON:
    ns = "relay device lists"
    seed, other = rnd(ns, "user seed"), rnd(ns, "other user seed")
    user_key = ref.ed25519_public_key(seed)
    label = limits.SIG_LABEL_DEVICE_LIST

    def dev(n: int) -> bytes:
        return ref.ed25519_public_key(rnd(ns, f"device seed {n}"))

    def signed(body: bytes, *, signer: bytes = seed, sig_label: bytes = label) -> bytes:
        return _signed(1, limits.TYPE_SIGNED_DEVICE_LIST, body, _sign(signer, sig_label, body))

    tests: list[JSON] = []

    def valid(
        comment: str, flags: list[str], user: str, counter: int, devices: list[tuple[int, bytes]]
    ) -> None:
        body = cmap(_list_pairs(user.encode(), user_key, uint(counter), devices))
        fields = {
            "userId": user,
            "userKey": hx(user_key),
            "counter": counter,
            "devices": [[d, hx(k)] for d, k in devices],
        }
        tests.append(case(comment, flags, signedList=hx(signed(body)), fields=fields))

    one = [(1, dev(1))]
    valid("one device", ["Valid"], "alice", 1, one)
    valid(
        "three devices, ids 0, 7 and 2^31 - 1, counter 2^32 - 1",
        ["EdgeCase"],
        "zo\u00eb \U0001f600",
        MAX_UINT32,
        [(0, dev(2)), (7, dev(3)), (2**31 - 1, dev(4))],
    )
    valid("64 devices", ["EdgeCase"], "alice", 0, [(i, dev(100 + i)) for i in range(64)])

    def bad(comment: str, flags: list[str], data: bytes) -> None:
        tests.append(
            case(comment, flags, "invalid", signedList=hx(data), error="device_list_invalid")
        )

    pairs = _list_pairs(b"alice", user_key, uint(1), one)
    base = cmap(pairs)
    good = signed(base)

    def with_devices(devices: list[tuple[int, bytes]]) -> bytes:
        return signed(cmap(_list_pairs(b"alice", user_key, uint(1), devices)))

    bad(
        "bit 0 of the signature's first byte flipped",
        ["ModifiedSignature"],
        flip(good, len(good) - 64),
    )
    bad(
        "signed by another key than the user key it names",
        ["WrongSigner"],
        signed(base, signer=other),
    )
    bad(
        "signed under the registration-ticket label",
        ["WrongLabel"],
        signed(base, sig_label=limits.SIG_LABEL_REGISTRATION_TICKET),
    )
    bad("signed without a label", ["WrongLabel"], signed(base, sig_label=b""))
    bad("one byte after the signed list", ["TrailingBytes"], good + b"\x00")
    bad(
        "one byte after the list inside field 2 (re-signed)",
        ["TrailingBytes"],
        signed(base + b"\x00"),
    )
    bad(
        "counter 1 as a two-byte head 18 01 (non-minimal, re-signed)",
        ["NonCanonical"],
        signed(cmap(_list_pairs(b"alice", user_key, uint(1, 1), one))),
    )
    bad(
        "list keys 5 before 4 (unsorted, re-signed)",
        ["NonCanonical"],
        signed(cmap([*pairs[:4], pairs[5], pairs[4]])),
    )
    bad(
        "outer type 39 (a signed registration ticket)",
        ["WrongType"],
        _signed(1, limits.TYPE_SIGNED_REGISTRATION_TICKET, base, _sign(seed, label, base)),
    )
    bad(
        "outer version 2",
        ["UnknownVersion"],
        _signed(2, limits.TYPE_SIGNED_DEVICE_LIST, base, _sign(seed, label, base)),
    )
    bad("list without its devices (re-signed)", ["MissingField"], signed(cmap(pairs[:5])))
    bad(
        "counter 2^32, beyond 2^32 - 1 (re-signed)",
        ["OutOfRange"],
        signed(cmap(_list_pairs(b"alice", user_key, uint(2**32), one))),
    )
    bad("device id 2^31 (re-signed)", ["OutOfRange"], with_devices([(2**31, dev(1))]))
    bad("no device (re-signed)", ["WrongLength"], with_devices([]))
    bad(
        "65 devices (re-signed)",
        ["WrongLength"],
        with_devices([(i, dev(100 + i)) for i in range(65)]),
    )
    bad("devices 2 before 1 (re-signed)", ["DeviceOrder"], with_devices([(2, dev(2)), (1, dev(1))]))
    bad("device id 1 twice (re-signed)", ["DeviceOrder"], with_devices([(1, dev(1)), (1, dev(2))]))
    bad(
        "one key for two devices (re-signed)",
        ["DeviceOrder"],
        with_devices([(1, dev(1)), (2, dev(1))]),
    )
    bad(
        "a user id that is not UTF-8 (re-signed)",
        ["NotUtf8"],
        signed(cmap(_list_pairs(b"alic\xff", user_key, uint(1), one))),
    )
    return {
        "type": "DeviceListVerify",
        "userSeed": hx(seed),
        "userKey": hx(user_key),
        "label": hx(label),
        "tests": tests,
    }


# --- login challenge response -----------------------------------------------------------------


def _login() -> JSON:
    ns = "relay login"
    seed, other = rnd(ns, "device seed"), rnd(ns, "other device seed")
    label = limits.SIG_LABEL_RELAY_LOGIN
    challenge = rnd(ns, "challenge", 48)
    tests: list[JSON] = []

    def payload(origin: str, chal: bytes, user: str, device: int) -> bytes:
        return label + array([bstr(origin.encode()), bstr(chal), bstr(user.encode()), uint(device)])

    def valid(comment: str, flags: list[str], origin: str, user: str, device: int) -> None:
        signed = payload(origin, challenge, user, device)
        tests.append(
            case(
                comment,
                flags,
                relayOrigin=origin,
                challenge=hx(challenge),
                userId=user,
                deviceId=device,
                payload=hx(signed),
                signature=hx(ref.ed25519_sign(seed, signed)),
            )
        )

    valid("device 1 of alice", ["Valid"], ORIGIN, "alice", 1)
    valid(
        "device 2^31 - 1, a non-ASCII user id",
        ["EdgeCase"],
        "http://127.0.0.1:8080",
        "zo\u00eb",
        2**31 - 1,
    )

    expected = payload(ORIGIN, challenge, "alice", 1)
    good = ref.ed25519_sign(seed, expected)

    def bad(comment: str, flags: list[str], signature: bytes) -> None:
        tests.append(
            case(
                comment,
                flags,
                "invalid",
                relayOrigin=ORIGIN,
                challenge=hx(challenge),
                userId="alice",
                deviceId=1,
                payload=hx(expected),
                signature=hx(signature),
                error="signature_invalid",
            )
        )

    bad("bit 0 of the signature's first byte flipped", ["ModifiedSignature"], flip(good, 0))
    bad("signed by another device key", ["WrongSigner"], ref.ed25519_sign(other, expected))
    bad(
        "signed for a phishing relay's origin",
        ["WrongOrigin"],
        ref.ed25519_sign(seed, payload("https://relay.example.net:443", challenge, "alice", 1)),
    )
    bad(
        "signed for the origin with a trailing slash",
        ["WrongOrigin"],
        ref.ed25519_sign(seed, payload(ORIGIN + "/", challenge, "alice", 1)),
    )
    bad(
        "signed for device 2",
        ["WrongSubject"],
        ref.ed25519_sign(seed, payload(ORIGIN, challenge, "alice", 2)),
    )
    bad(
        "signed for user bob",
        ["WrongSubject"],
        ref.ed25519_sign(seed, payload(ORIGIN, challenge, "bob", 1)),
    )
    bad(
        "signed over another challenge",
        ["WrongSubject"],
        ref.ed25519_sign(seed, payload(ORIGIN, flip(challenge, 47), "alice", 1)),
    )
    bad(
        "signed under the device-list label",
        ["WrongLabel"],
        ref.ed25519_sign(seed, limits.SIG_LABEL_DEVICE_LIST + expected[len(label) :]),
    )
    bad("signed without a label", ["WrongLabel"], ref.ed25519_sign(seed, expected[len(label) :]))
    return {
        "type": "RelayLoginSignature",
        "deviceSeed": hx(seed),
        "deviceKey": hx(ref.ed25519_public_key(seed)),
        "label": hx(label),
        "tests": tests,
    }


def relay_signatures_file() -> JSON:
    return envelope(
        schema="e2ee_relay_signature_schema_v1.json",
        algorithm="Ed25519 over canonical CBOR (relay structures)",
        header=[
            "The signed structures of the relay layer (spec/relay.md sections 3 and 4.1, "
            "spec/client.md section 4), byte for byte.",
            "RegistrationTicketVerify: decode the ticket, verify it under authorityKey, check "
            "it for the relay's relayOrigin, the list's userId and userKey, the relay time now, "
            "maxLifetime and clockSkew. A valid ticket is exactly the bytes an issuer makes "
            "from fields and authoritySeed. A malformed ticket is relay_bad_request, one "
            "refused for what it says (signature included) relay_forbidden; the relay's code "
            "is bad_ticket either way.",
            "DeviceListVerify: decode a signed device list and verify it under the user key it "
            "names (device_list_invalid otherwise); a valid one is exactly what userSeed signs "
            "for fields. Whether a list's counter may replace a stored one is a rule of the "
            "relay's and the client's state, not of the structure, and is not tested here.",
            "RelayLoginSignature: payload = label || CBOR([relayOrigin, challenge, userId, "
            "deviceId]); the relay verifies signature over it under deviceKey "
            "(signature_invalid otherwise; the relay answers 401 unauthorized). A valid "
            "signature is exactly what deviceSeed signs.",
        ],
        notes=RELAY_NOTES,
        groups=[_tickets(), _device_lists(), _login()],
    )
