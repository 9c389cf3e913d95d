#!/usr/bin/env python3
"""Independent reference implementation of key derivation v1.

Prints the test vectors published in the README and pinned by the unit
tests in src/client/key/derive.rs. It shares no code with the Rust
implementation on purpose: if both agree, the documented rule is what the
binary does.
"""
import hashlib
import struct
import urllib.parse
import uuid

# Names whose values are credentials (src/shared/secret_names.rs, restated).
SECRET_EXACT = {"authorization", "proxy-authorization", "cookie", "auth", "sig", "pwd"}
SECRET_WORDS = ["token", "secret", "key", "password", "passwd", "signature", "credential"]


def framed_sha256(*fields):
    """SHA-256 over fields, each as a 4-byte big-endian length and its bytes."""
    h = hashlib.sha256()
    for field in fields:
        data = field if isinstance(field, bytes) else field.encode()
        h.update(struct.pack(">I", len(data)))
        h.update(data)
    return h.digest()


def key(provider, identity, attempt, salt, fingerprint):
    raw = bytearray(
        framed_sha256("idempotent-request/v1", provider, *identity, attempt, salt, fingerprint)[:16]
    )
    raw[6] = (raw[6] & 0x0F) | 0x80  # version 8
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 9562 variant
    return str(uuid.UUID(bytes=bytes(raw)))


def is_secret_name(name):
    decoded = urllib.parse.unquote(name, errors="replace").lower()
    return decoded in SECRET_EXACT or any(word in decoded for word in SECRET_WORDS)


def key_url(url):
    """The URL as it feeds the key: no user-info, secret query values left out."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    query = "&".join(
        component.split("=", 1)[0] if is_secret_name(component.split("=", 1)[0]) else component
        for component in parts.query.split("&")
    ) if parts.query else parts.query
    rebuilt = parts.scheme + "://" + netloc + parts.path
    if "?" in url:
        rebuilt += "?" + query
    return rebuilt


GITHUB = ["https://github.com", "123456", "9876543210", "deploy", "", "create-deployment"]
ZERO = bytes(32)
REQUEST_FP = framed_sha256("POST", "https://api.example.com/deployments", "", b'{"ref":"v1.2.3"}')
TOKEN_URL = "https://ci:tok-1@api.example.com/deployments?access_token=tok-2&env=prod"
TOKEN_FP = framed_sha256("POST", key_url(TOKEN_URL), "", b'{"ref":"v1.2.3"}')

print("1 github, run scope, no salt, zero fingerprint:", key("github", GITHUB, "", "", ZERO))
print("2 github, run scope, salt eu-west, zero fingerprint:", key("github", GITHUB, "", "eu-west", ZERO))
print("3 local, salt nightly, zero fingerprint:", key("local", [], "", "nightly", ZERO))
print("4 fingerprint of POST https://api.example.com/deployments {\"ref\":\"v1.2.3\"}:", REQUEST_FP.hex())
print("5 github, run scope, no salt, that fingerprint:", key("github", GITHUB, "", "", REQUEST_FP))
print("6 github, attempt scope (attempt 2), that fingerprint:", key("github", GITHUB, "2", "", REQUEST_FP))
print("7 fingerprint of POST " + TOKEN_URL + " with that body:", TOKEN_FP.hex())
print("8 github, run scope, no salt, that fingerprint:", key("github", GITHUB, "", "", TOKEN_FP))
print("9 trace-id for the key of vector 5:", framed_sha256("idempotent-request/trace/v1", "ae6cb888-153b-8630-a265-6925d0ff6072")[:16].hex())
