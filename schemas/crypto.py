"""Secrets at rest: AES-256-GCM under a key ring, bound to the row that holds them.

``AGENTAPI_ENCRYPTION_KEYS`` is a comma-separated list of ``key_id:base64(32 bytes)``; the first key
encrypts, every key decrypts, so a rotation adds a key in front, re-encrypts (``agentapi keys
rotate``), then drops the old one. A ciphertext is ``v1.<key_id>.<base64url(nonce || ct+tag)>`` and
its associated data is the row's identity (table, column, row id, org id): a ciphertext copied to
another row or tenant fails to decrypt instead of handing over someone else's secret.

Bytes (workspace snapshots) are sealed the same way in a binary frame, ``v1 || len(key_id) ||
key_id || nonce || ct+tag``, with the caller's associated data; ``derive_key`` gives a keyed-hash
key per purpose from the primary key, so object names can be content hashes that leak nothing.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = "v1"
NONCE_BYTES = 12
_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class KeyRingError(ValueError):
    """The configured key ring is malformed."""


class DecryptionError(ValueError):
    """A ciphertext could not be opened: unknown key, tampered, or moved to another row."""


@dataclass(frozen=True)
class SecretRef:
    """Where a secret lives; its identity is the associated data of the ciphertext."""

    table: str
    column: str
    row_id: UUID
    org_id: UUID | None

    def associated_data(self) -> bytes:
        return f"{VERSION}|{self.table}|{self.column}|{self.row_id}|{self.org_id or '-'}".encode()


class KeyRing:
    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise KeyRingError("the key ring is empty")
        seen: set[str] = set()
        for key_id, key in keys:
            if not _KEY_ID.match(key_id):
                raise KeyRingError(f"key id {key_id!r} must be 1-32 letters, digits, '-' or '_'")
            if key_id in seen:
                raise KeyRingError(f"key id {key_id!r} appears twice")
            if len(key) != 32:
                raise KeyRingError(f"key {key_id!r} must be 32 bytes (AES-256), got {len(key)}")
            seen.add(key_id)
        self._keys = {key_id: AESGCM(key) for key_id, key in keys}
        self.primary_id = keys[0][0]
        self._primary_key = keys[0][1]

    @classmethod
    def parse(cls, spec: str) -> KeyRing:
        """Parse ``id:base64key[,id:base64key...]``."""
        keys: list[tuple[str, bytes]] = []
        for entry in filter(None, (part.strip() for part in spec.split(","))):
            key_id, sep, encoded = entry.partition(":")
            if not sep:
                raise KeyRingError("each key must be written as key_id:base64key")
            try:
                key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_", validate=False)
            except (binascii.Error, ValueError) as exc:
                raise KeyRingError(f"key {key_id!r} is not valid base64") from exc
            keys.append((key_id, key))
        return cls(keys)

    @staticmethod
    def generate_key() -> str:
        return base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()

    def encrypt(self, plaintext: str, ref: SecretRef) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._keys[self.primary_id].encrypt(nonce, plaintext.encode(), ref.associated_data())
        body = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{VERSION}.{self.primary_id}.{body}"

    def decrypt(self, ciphertext: str, ref: SecretRef) -> str:
        version, key_id, body = _split(ciphertext)
        if version != VERSION:
            raise DecryptionError(f"unsupported ciphertext version {version!r}")
        aead = self._keys.get(key_id)
        if aead is None:
            raise DecryptionError(f"ciphertext was sealed with key {key_id!r}, which is not in the key ring")
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            return aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], ref.associated_data()).decode()
        except (InvalidTag, binascii.Error, ValueError) as exc:
            raise DecryptionError(
                f"secret in {ref.table}.{ref.column} of row {ref.row_id} does not open under this row's"
                " identity: it was tampered with or copied from another row or tenant"
            ) from exc

    def seal_bytes(self, plaintext: bytes, associated_data: bytes) -> bytes:
        key_id = self.primary_id.encode()
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._keys[self.primary_id].encrypt(nonce, plaintext, associated_data)
        return VERSION.encode() + bytes([len(key_id)]) + key_id + nonce + sealed

    def open_bytes(self, frame: bytes, associated_data: bytes) -> bytes:
        """The plaintext of ``seal_bytes``; DecryptionError when the frame was tampered with, sealed
        under another key ring, or sealed with other associated data (another tenant's object)."""
        head = len(VERSION)
        if len(frame) < head + 1 or frame[:head] != VERSION.encode():
            raise DecryptionError("not a sealed object of this service")
        key_end = head + 1 + frame[head]
        key_id = frame[head + 1 : key_end].decode(errors="replace")
        aead = self._keys.get(key_id)
        if aead is None:
            raise DecryptionError(f"object was sealed with key {key_id!r}, which is not in the key ring")
        try:
            return aead.decrypt(
                frame[key_end : key_end + NONCE_BYTES], frame[key_end + NONCE_BYTES :], associated_data
            )
        except (InvalidTag, ValueError) as exc:
            raise DecryptionError(
                "object does not open under this identity: it was tampered with or belongs to another"
                " tenant or session"
            ) from exc

    def derive_key(self, purpose: str) -> bytes:
        """A 32-byte key for ``purpose`` (HKDF-SHA256 of the primary key): changes with rotation."""
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(
            self._primary_key
        )

    def needs_rotation(self, ciphertext: str) -> bool:
        return _split(ciphertext)[1] != self.primary_id

    def rotate(self, ciphertext: str, ref: SecretRef) -> str:
        """The same secret sealed under the primary key (unchanged when it already is)."""
        if not self.needs_rotation(ciphertext):
            return ciphertext
        return self.encrypt(self.decrypt(ciphertext, ref), ref)


def _split(ciphertext: str) -> tuple[str, str, str]:
    parts = ciphertext.split(".", 2)
    if len(parts) != 3:
        raise DecryptionError("not a ciphertext of this service (expected v1.<key_id>.<data>)")
    return parts[0], parts[1], parts[2]
