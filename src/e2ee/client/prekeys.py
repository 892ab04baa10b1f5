"""Prekey lifecycle: keep one-time prekeys stocked, rotate the signed prekey, say what to upload.

* One-time EC and ML-KEM prekeys: the supply of a kind is what the directory still holds of it
  (when the caller knows that count) plus the unpublished ones. When either supply is below
  ``refill_below``, generate enough to get back to ``one_time_target``, within the account's
  cap. Published keys the directory no longer holds were handed out to initiators; once
  the cap leaves no room, the oldest of them are discarded to make some, so keys handed out
  and never used (an initiator that gave up, or someone draining the directory) cannot stop
  the refill for good.
* Signed prekey (with its signed last-resort ML-KEM companion): rotated once it is at least
  ``rotate_after`` seconds old; the core keeps the replaced one for its grace period
  (``SIGNED_PREKEY_GRACE_PERIOD``) so initial messages already in flight still open.
* :class:`PrekeyUpload` is what the directory needs next: the current signed bundle (without
  one-time keys) and the unpublished one-time keys. After the directory accepted it, the client
  marks them published; a crash in between only uploads the same keys again (ids are stable).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from e2ee.account import Account
from e2ee.crypto.provider import Provider
from e2ee.limits import MAX_ONE_TIME_PREKEYS


@dataclass(frozen=True, slots=True)
class PrekeyPolicy:
    one_time_target: int = 100
    refill_below: int = 25
    rotate_after: int = 7 * 24 * 3600

    def __post_init__(self) -> None:
        if not 0 <= self.refill_below <= self.one_time_target <= MAX_ONE_TIME_PREKEYS:
            raise ValueError("need 0 <= refill_below <= one_time_target <= the account cap")
        if self.rotate_after <= 0:
            raise ValueError("rotate_after must be positive")


@dataclass(frozen=True, slots=True)
class PrekeyUpload:
    """Public keys only: safe to log the counts, nothing here is secret."""

    user_id: str
    device_id: int
    signed_bundle: bytes = field(repr=False)
    one_time: tuple[tuple[int, bytes, bytes], ...] = field(default=(), repr=False)
    one_time_kem: tuple[tuple[int, bytes, bytes], ...] = field(default=(), repr=False)

    @property
    def prekey_ids(self) -> list[int]:
        return [i for i, _, _ in self.one_time] + [i for i, _, _ in self.one_time_kem]

    @property
    def empty(self) -> bool:
        return not self.one_time and not self.one_time_kem


def maintain(
    account: Account,
    policy: PrekeyPolicy,
    provider: Provider,
    now: int,
    stored: tuple[int, int] | None = None,
) -> bool:
    """Refill and rotate as the policy says; True if the account changed. ``stored`` is what
    the directory reports it still holds of this device's one-time (EC, ML-KEM) keys, if known:
    those count as supply, and the published keys beyond them (handed out, their initial
    message not come) are discarded oldest first when the cap leaves no room for the refill."""
    changed = False
    if now - account.signed_prekey_timestamp >= policy.rotate_after:
        account.rotate_signed_prekey(provider=provider, now=now)
        changed = True
    held = (account.one_time_prekey_count(), account.one_time_kem_prekey_count())
    unpublished = (
        account.unpublished_one_time_prekey_count(),
        account.unpublished_one_time_kem_prekey_count(),
    )
    published = (held[0] - unpublished[0], held[1] - unpublished[1])
    # the directory cannot hold more of this device's keys than were published to it
    at_directory = (
        (0, 0) if stored is None else (min(stored[0], published[0]), min(stored[1], published[1]))
    )
    supply = at_directory[0] + unpublished[0]
    if account.post_quantum:
        supply = min(supply, at_directory[1] + unpublished[1])
    if supply >= policy.refill_below:
        return changed
    count = policy.one_time_target - supply
    if stored is not None:
        discard = [
            min(
                published[kind] - at_directory[kind],
                max(0, held[kind] + count - MAX_ONE_TIME_PREKEYS),
            )
            for kind in (0, 1)
        ]
        if any(discard):
            account.discard_published_one_time_prekeys(discard[0], discard[1])
            changed = True
    count = min(count, MAX_ONE_TIME_PREKEYS - account.one_time_prekey_count())
    if count > 0:
        account.generate_one_time_prekeys(count, provider=provider)
        changed = True
    return changed


def pending_upload(account: Account, user_id: str, device_id: int) -> PrekeyUpload:
    return PrekeyUpload(
        user_id=user_id,
        device_id=device_id,
        signed_bundle=account.signed_prekey_bundle().to_bytes(),
        one_time=tuple(account.unpublished_one_time_prekeys()),
        one_time_kem=tuple(account.unpublished_one_time_kem_prekeys()),
    )
