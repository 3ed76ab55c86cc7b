"""Signed result files: how an offline site's answer travels to the hub by e-mail or USB stick.

The file holds the task, the node's answer and a signature over both (canonical JSON). Two ways
to sign: HMAC-SHA256 keyed with the SHA-256 digest of the node's token (the hub stores that digest,
never the token), or an Ed25519 private key whose public half is registered at the hub.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, ValidationError

from ccdp.errors import CcdpError
from ccdp.wire.protocol import Answer, Task

FORMAT: Literal["ccdp-result/1"] = "ccdp-result/1"


class ResultFileError(CcdpError):
    """A result file is malformed, unsigned, or its signature does not verify."""


class Signature(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alg: Literal["hmac-sha256", "ed25519"]
    value: str


class ResultFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["ccdp-result/1"] = FORMAT
    node: str
    task: Task
    answer: Answer
    signature: Signature

    def payload(self) -> bytes:
        """The signed bytes: canonical JSON of everything but the signature."""
        return canonical(self.model_dump(mode="json", exclude={"signature"}))


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def hmac_key(token: str) -> bytes:
    """The HMAC key a node derives from its token; the hub holds the same digest."""
    return bytes.fromhex(hashlib.sha256(token.encode("utf-8")).hexdigest())


def _unsigned(node: str, task: Task, answer: Answer) -> ResultFile:
    return ResultFile(
        node=node, task=task, answer=answer, signature=Signature(alg="hmac-sha256", value="")
    )


def sign_with_token(node: str, task: Task, answer: Answer, token: str) -> ResultFile:
    rf = _unsigned(node, task, answer)
    mac = hmac.new(hmac_key(token), rf.payload(), hashlib.sha256).digest()
    rf.signature = Signature(alg="hmac-sha256", value=base64.b64encode(mac).decode())
    return rf


def sign_with_key(node: str, task: Task, answer: Answer, private_key_pem: bytes) -> ResultFile:
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ResultFileError("the signing key is not an Ed25519 private key")
    rf = _unsigned(node, task, answer)
    sig = key.sign(rf.payload())
    rf.signature = Signature(alg="ed25519", value=base64.b64encode(sig).decode())
    return rf


def verify(rf: ResultFile, token_digest_hex: str, public_key_pem: str | None) -> None:
    """Raise ResultFileError unless the signature verifies with the node's registered secret."""
    sig = base64.b64decode(rf.signature.value.encode())
    if rf.signature.alg == "hmac-sha256":
        good = hmac.new(bytes.fromhex(token_digest_hex), rf.payload(), hashlib.sha256).digest()
        if not hmac.compare_digest(good, sig):
            raise ResultFileError(f"result file from node {rf.node!r}: HMAC signature is invalid")
        return
    if not public_key_pem:
        raise ResultFileError(f"node {rf.node!r} has no Ed25519 public key registered at the hub")
    pub = serialization.load_pem_public_key(public_key_pem.encode())
    if not isinstance(pub, Ed25519PublicKey):
        raise ResultFileError(f"node {rf.node!r}: registered key is not Ed25519")
    try:
        pub.verify(sig, rf.payload())
    except InvalidSignature as exc:
        raise ResultFileError(
            f"result file from node {rf.node!r}: Ed25519 signature is invalid"
        ) from exc


def read(path: Path) -> ResultFile:
    try:
        return ResultFile.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValidationError) as exc:
        raise ResultFileError(f"{path}: not a ccdp result file: {exc}") from exc


def write(rf: ResultFile, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(rf.model_dump_json(indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def generate_key(path: Path) -> str:
    """Write a new Ed25519 private key (PEM) to `path`; return the public key PEM to register."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    path.chmod(0o600)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
