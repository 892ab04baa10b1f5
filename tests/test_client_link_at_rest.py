"""The pending link code at rest (spec/client.md REQ-CL-42) and the schema-2-to-3 migration that
seals a code an older store kept in clear (REQ-CL-40).

Expected bytes are computed here with the libraries directly (HKDF from ``cryptography``,
XChaCha20-Poly1305 from libsodium through PyNaCl), not with the code under test.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl import bindings

from e2ee.client import Client
from e2ee.errors import LocalError, StateError
from tests.client_support import World, snapshot

STORE_KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def link_code_key(store_key: bytes) -> bytes:
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=bytes(32),
        info=b"e2ee/v1/client-store/link-code",
    )
    return hkdf.derive(store_key)


def open_as_spec_says(stored: bytes, store_key: bytes) -> bytes:
    nonce, ciphertext = stored[:24], stored[24:]
    opened: bytes = bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
        ciphertext, b"link_code", nonce, link_code_key(store_key)
    )
    return opened


def seal_as_spec_says(code: bytes, store_key: bytes, nonce: bytes) -> bytes:
    sealed: bytes = bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        code, b"link_code", nonce, link_code_key(store_key)
    )
    return nonce + sealed


def path_of(client: Client) -> Path:
    return Path(client.store.conn.execute("PRAGMA database_list").fetchone()[2])


def stored_code(client: Client) -> object:
    row = client.store.conn.execute("SELECT value FROM meta WHERE name = 'link_code'").fetchone()
    return None if row is None else row[0]


def set_stored(client: Client, name: str, value: object) -> None:
    client.store.conn.execute("UPDATE meta SET value = ? WHERE name = ?", (value, name))


def file_bytes(path: Path) -> bytes:
    """The database and its WAL: everything the store wrote to disk."""
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def spellings(code: str) -> list[bytes]:
    return [code.encode(), code.replace("-", "").encode()]


def test_an_encrypted_store_keeps_the_link_code_sealed_as_the_spec_says(world: World) -> None:
    """REQ-CL-42: sealed under its own subkey with the name as associated data, never in clear
    on disk (database or WAL), and still shown and used for linking."""
    [primary] = world.user("alice")
    new = Client.create_linked(world.path("alice"), "alice", key=STORE_KEY)
    code = new.link_code
    stored = stored_code(new)
    assert type(stored) is bytes
    assert open_as_spec_says(stored, STORE_KEY) == code.encode()
    on_disk = file_bytes(path_of(new))
    assert all(spelling not in on_disk for spelling in spellings(code))

    new.complete_link(primary.approve_link(new.link_request(), code))
    assert new.device_id == 2
    assert stored_code(new) is None
    with pytest.raises(LocalError):
        _ = new.link_code


def test_each_link_code_is_sealed_with_a_fresh_nonce(world: World) -> None:
    """[REQ-CL-42] Two waiting devices under one store key seal their codes under different
    random nonces (a fixed nonce would repeat the key stream under the link-code subkey)."""
    first = Client.create_linked(world.path("alice"), "alice", key=STORE_KEY)
    second = Client.create_linked(world.path("alice"), "alice", key=STORE_KEY)
    first_stored, second_stored = stored_code(first), stored_code(second)
    assert isinstance(first_stored, bytes)
    assert isinstance(second_stored, bytes)
    assert first_stored[:24] != second_stored[:24]


def test_a_plain_store_keeps_the_link_code_as_utf8_bytes(world: World) -> None:
    """REQ-CL-42 without a store key: nothing to seal under, the code as it is (a BLOB)."""
    [primary] = world.user("alice")
    new = Client.create_linked(world.path("alice"), "alice")
    assert stored_code(new) == new.link_code.encode()
    new.complete_link(primary.approve_link(new.link_request(), new.link_code))
    assert new.device_id == 2


def test_a_code_sealed_under_another_subkey_or_name_does_not_open(world: World) -> None:
    """REQ-CL-42: the subkey is the link code's own (not the inbox subkey, not another store
    key), and the associated data binds it to its name."""
    new = Client.create_linked(world.path("alice"), "alice", key=STORE_KEY)
    code = new.link_code.encode()
    nonce = bytes(24)
    assert stored_code(new) != seal_as_spec_says(code, STORE_KEY, nonce)  # a random nonce
    set_stored(new, "link_code", seal_as_spec_says(code, STORE_KEY, nonce))
    assert new.link_code.encode() == code  # the spec's construction opens

    inbox_key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=bytes(32), info=b"e2ee/v1/client-store/inbox"
    ).derive(STORE_KEY)
    wrong = [
        seal_as_spec_says(code, OTHER_KEY, nonce),
        nonce
        + bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(code, b"link_code", nonce, inbox_key),
        nonce
        + bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            code, b"link_request", nonce, link_code_key(STORE_KEY)
        ),
    ]
    for stored in wrong:
        set_stored(new, "link_code", stored)
        with pytest.raises(StateError, match="link code"):
            _ = new.link_code


@pytest.mark.parametrize(
    "stored",
    [
        pytest.param("ABCDE-FGHIJ", id="clear-text"),
        pytest.param(7, id="integer"),
        pytest.param(b"\x00" * 10, id="too-short"),
        pytest.param("tampered", id="flipped-byte"),
    ],
)
def test_a_stored_code_that_does_not_open_fails_linking_and_changes_nothing(
    world: World, stored: object
) -> None:
    """REQ-CL-42 with rule 1: a damaged pending code is a StateError; the failed complete_link
    leaves every row as it was."""
    [primary] = world.user("alice")
    new = Client.create_linked(world.path("alice"), "alice", key=STORE_KEY)
    approval = primary.approve_link(new.link_request(), new.link_code)
    if stored == "tampered":
        sealed = stored_code(new)
        assert isinstance(sealed, bytes)
        stored = sealed[:-1] + bytes([sealed[-1] ^ 1])
    set_stored(new, "link_code", stored)
    before = snapshot(new)
    with pytest.raises(StateError, match="link code"):
        _ = new.link_code
    with pytest.raises(StateError, match="link code"):
        new.complete_link(approval)
    assert snapshot(new) == before


def test_a_plain_store_code_that_is_not_utf8_is_a_state_error(world: World) -> None:
    """[REQ-CL-42] A stored code that opens (a plain store's is stored as it is) but is not
    UTF-8 is a StateError, not a UnicodeDecodeError."""
    new = Client.create_linked(world.path("alice"), "alice")
    set_stored(new, "link_code", b"\xff\xfe")
    with pytest.raises(StateError, match="link code"):
        _ = new.link_code


def test_a_stored_link_request_that_is_not_a_blob_is_a_state_error(world: World) -> None:
    [primary] = world.user("alice")
    new = Client.create_linked(world.path("alice"), "alice", key=STORE_KEY)
    approval = primary.approve_link(new.link_request(), new.link_code)
    set_stored(new, "link_request", "not bytes")
    before = snapshot(new)
    with pytest.raises(StateError, match="link request"):
        new.link_request()
    with pytest.raises(StateError, match="link request"):
        new.complete_link(approval)
    assert snapshot(new) == before


# --- schema 2 to 3 -------------------------------------------------------------------------------


def make_schema_2(client: Client, code: object) -> Path:
    """Turn a waiting device's store into the schema-2 layout: the code as clear TEXT."""
    path = path_of(client)
    set_stored(client, "link_code", code)
    set_stored(client, "schema", 2)
    client.store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    client.close()
    return path


def test_a_schema_2_store_is_migrated_sealing_the_pending_code(world: World) -> None:
    """REQ-CL-40: the clear code is replaced by its sealed form in the migration's transaction,
    and linking then completes with the same code."""
    [primary] = world.user("alice")
    new = Client.create_linked(world.path("alice"), "alice", key=STORE_KEY)
    code = new.link_code
    request = new.link_request()
    path = make_schema_2(new, code)
    assert code.encode() in file_bytes(path)  # the old layout, in clear

    new = Client.open(path, key=STORE_KEY)
    conn = new.store.conn
    assert conn.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()[0] == 3
    stored = stored_code(new)
    assert isinstance(stored, bytes)
    assert open_as_spec_says(stored, STORE_KEY) == code.encode()
    assert new.link_code == code
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # secure_delete zeroed the old text
    assert all(spelling not in file_bytes(path) for spelling in spellings(code))

    new.complete_link(primary.approve_link(request, code))
    assert new.device_id == 2


def test_a_schema_2_store_with_no_pending_code_only_changes_the_schema(world: World) -> None:
    [alice] = world.user("alice")
    path = path_of(alice)
    set_stored(alice, "schema", 2)
    before = snapshot(alice)
    alice.close()
    alice = Client.open(path)
    after = snapshot(alice)
    assert after.pop("meta") != before.pop("meta")
    assert after == before
    assert alice.store.conn.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone() == (
        3,
    )


@pytest.mark.parametrize("code", [b"ABCDE-FGHIJ", 12345])
def test_a_schema_2_code_that_is_not_text_is_refused_and_the_file_is_unchanged(
    world: World, code: object
) -> None:
    """REQ-CL-40: the migration refuses what schema 2 could not have written."""
    new = Client.create_linked(world.path("alice"), "alice", key=STORE_KEY)
    path = make_schema_2(new, code)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StateError, match="link code"):
        Client.open(path, key=STORE_KEY)
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("sealed", "key"),
    [
        pytest.param(True, OTHER_KEY, id="wrong-key"),
        pytest.param(True, None, id="no-key-for-a-sealed-store"),
        pytest.param(False, STORE_KEY, id="a-key-for-a-plain-store"),
    ],
)
def test_an_older_store_opened_with_the_wrong_key_is_not_migrated(
    world: World, sealed: bool, key: bytes | None
) -> None:
    """REQ-CL-40 with REQ-CL-45: the key is checked before a migration writes, so the failed
    open leaves the file as it was, and the right key then migrates it and the waiting device
    can still link (the code is not sealed under the wrong key)."""
    [primary] = world.user("alice")
    right = STORE_KEY if sealed else None
    new = Client.create_linked(world.path("alice"), "alice", key=right)
    code = new.link_code
    request = new.link_request()
    path = make_schema_2(new, code)
    before = path.read_bytes()
    with pytest.raises(StateError):
        Client.open(path, key=key)
    assert path.read_bytes() == before

    new = Client.open(path, key=right)
    assert new.link_code == code
    new.complete_link(primary.approve_link(request, code))
    assert new.device_id == 2
