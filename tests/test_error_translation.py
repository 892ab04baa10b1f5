"""[REQ-ERR-03] Translation sites outside the core decoders: text fields and tokens.

The client's envelope, content and link-request parsers and the relay's user-id and bearer-token
readers turn bytes from the network into ``str``; Python's ``bytes.decode`` and ``base64`` raise
``ValueError`` subclasses for bad input. Each site must translate that into the documented
``e2ee.errors`` class (or, for a token, "no token"), whatever the bytes are; link messages that
do not decode must be ``LinkError``, not the decoder's ``DecodeError``. The mutation audit found
that removing any of these translations (except the link request's) failed no other test.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from e2ee.client.devices import (
    LINK_NONCE_SIZE,
    LINK_TAG_SIZE,
    LINK_VERSION,
    LinkApproval,
    LinkRequest,
)
from e2ee.client.envelope import (
    CONTENT_VERSION,
    ENVELOPE_VERSION,
    MESSAGE_ID_SIZE,
    Content,
    Envelope,
)
from e2ee.errors import DecodeError, LinkError, RelayBadRequestError
from e2ee.identity import MAX_USER_ID_SIZE
from e2ee.limits import TYPE_CONTENT, TYPE_ENVELOPE, TYPE_LINK_REQUEST
from e2ee.relay import api
from e2ee.wire import codec

USER_IDS = st.binary(min_size=1, max_size=MAX_USER_ID_SIZE)
NOT_UTF8 = b"\xff"  # never valid UTF-8
TRUNCATED_UTF8 = "\u00e9".encode()[:1]  # the first byte of a two-byte sequence


def _utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


@given(user=USER_IDS, other=st.booleans())
@example(user=NOT_UTF8, other=False)
@example(user=TRUNCATED_UTF8, other=True)
def test_envelope_user_ids_are_utf8_or_a_decode_error(user: bytes, other: bool) -> None:
    """Either user field of an envelope: valid UTF-8 is read as that text, anything else is a
    DecodeError."""
    sender, recipient = (b"alice", user) if other else (user, b"alice")
    data = codec.encode(
        {
            0: ENVELOPE_VERSION,
            1: TYPE_ENVELOPE,
            2: sender,
            3: 1,
            4: recipient,
            5: 2,
            6: bytes(MESSAGE_ID_SIZE),
            7: b"wire",
            8: None,
        }
    )
    text = _utf8(user)
    if text is None:
        with pytest.raises(DecodeError):
            Envelope.from_bytes(data)
    else:
        envelope = Envelope.from_bytes(data)
        assert (envelope.recipient_user if other else envelope.sender_user) == text


@given(user=USER_IDS)
@example(user=NOT_UTF8)
def test_content_conversation_and_sender_are_utf8_or_a_decode_error(user: bytes) -> None:
    text = _utf8(user)
    for in_conversation in (True, False):
        conversation, sender = (user, b"alice") if in_conversation else (b"bob", user)
        data = codec.encode(
            {
                0: CONTENT_VERSION,
                1: TYPE_CONTENT,
                2: bytes(MESSAGE_ID_SIZE),
                3: conversation,
                4: b"hi",
                5: sender,
                6: 1,
            }
        )
        if text is None:
            with pytest.raises(DecodeError):
                Content.from_bytes(data)
            continue
        content = Content.from_bytes(data)
        expected = (text, "alice") if in_conversation else ("bob", text)
        assert (content.conversation, content.sender_user) == expected


@given(user=USER_IDS)
@example(user=NOT_UTF8)
def test_link_request_user_id_is_utf8_or_a_link_error(user: bytes) -> None:
    data = codec.encode(
        {
            0: LINK_VERSION,
            1: TYPE_LINK_REQUEST,
            2: user,
            3: bytes(32),
            4: bytes(LINK_NONCE_SIZE),
            5: bytes(LINK_TAG_SIZE),
        }
    )
    text = _utf8(user)
    if text is None:
        with pytest.raises(LinkError):
            LinkRequest.from_bytes(data)
    else:
        assert LinkRequest.from_bytes(data).user_id == text


@given(user=USER_IDS)
@example(user=NOT_UTF8)
@example(user=b"a\x00b")
def test_relay_user_field_is_utf8_without_u0000_or_a_bad_request(user: bytes) -> None:
    text = _utf8(user)
    if text is None or "\x00" in text:  # REQ-RL-44
        with pytest.raises(RelayBadRequestError):
            api.user_field(user)
    else:
        assert api.user_field(user) == text


@pytest.mark.parametrize("parser", [LinkRequest.from_bytes, LinkApproval.from_bytes])
@given(data=st.binary(max_size=200))
@example(data=b"")
@example(data=b"\xff")
@example(data=b"\x18\x01")  # not canonical
def test_link_messages_of_arbitrary_bytes_are_link_errors(
    parser: Callable[[bytes], object], data: bytes
) -> None:
    """[REQ-CL-21] [REQ-CL-22] A link request or approval that does not even decode is refused
    with LinkError, not with the decoder's DecodeError."""
    with pytest.raises(LinkError):
        parser(data)


TOKEN_TEXT = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=43, max_size=43
)


@given(text=TOKEN_TEXT)
@example(text="A" * 42 + "!")  # '!' is dropped, leaving 42 characters: bad padding
@example(text="A" * 42 + "=")
def test_a_bearer_token_of_any_ascii_text_is_a_token_or_none(text: str) -> None:
    """Any 43-character header value is a 32-byte token or no token (the request is then
    unauthenticated), never an exception."""
    token = api.decode_token(text)
    assert token is None or len(token) == 32


@given(token=st.binary(min_size=32, max_size=32))
def test_a_well_formed_bearer_token_decodes_to_its_bytes(token: bytes) -> None:
    text = base64.urlsafe_b64encode(token).rstrip(b"=").decode()
    assert api.decode_token(text) == token
