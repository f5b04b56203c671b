"""Signing a bundle with the OpenSSF model-signing format (key-based, offline).

`sign(BUNDLE, key)` writes BUNDLE/model.sig: a Sigstore bundle (DSSE envelope, in-toto statement) whose payload lists
the sha256 of every file in the bundle — manifest.json included — signed with an elliptic-curve private key (PEM;
P-256, P-384 or P-521). `verify_signature(BUNDLE, public_key)` checks it. The same file verifies with the upstream
tool: `model_signing verify key BUNDLE --signature BUNDLE/model.sig --public_key KEY.pub`.

Left out of the signature, by design: model.sig itself (a signature cannot cover itself) and engine/ (engines are
built on the device after signing; see bundle.build_script). The plain verify's "no unlisted file" rule allows
exactly these two, so signing never breaks `optkit verify`, and running build_engine.sh never breaks a signature.

model-signing is the optional extra `optkit[sign]` (it pulls sigstore, tuf, requests, cryptography): imported lazily.
"""
from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from toolkit.output.manifest import ENGINE_DIR, SIGNATURE, show, walk
from toolkit.core.errors import BackendUnavailable, ConfigError, GateFailed

UNSIGNED = (SIGNATURE, ENGINE_DIR)


def _model_signing():
    try:
        import model_signing.hashing  # noqa: PLC0415
        import model_signing.signing  # noqa: PLC0415
        import model_signing.verifying  # noqa: PLC0415
    except ImportError as exc:
        raise BackendUnavailable(f"signing needs the model-signing package ({exc}); install it with "
                                 "pip install 'optkit[sign]'") from None
    return model_signing


def _hashing_config(ms):
    # Upstream ignores .git* files by default; a bundle has none, and whatever is in it must be signed.
    return ms.hashing.Config().use_file_serialization(hashing_algorithm="sha256", allow_symlinks=False) \
        .set_ignored_paths(paths=list(UNSIGNED), ignore_git_paths=False)


def _load_key(path: Path, private: bool, password: str | None = None):
    """Read the PEM ourselves first so a wrong file is one clear line (model-signing would raise a bare ValueError)."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415  (a model-signing dependency)
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

    what = "private" if private else "public"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{show(path)}: the {what} key cannot be read ({exc.strerror}); pass a PEM file") from None
    try:
        if private:
            key = serialization.load_pem_private_key(data, password.encode() if password else None)
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        hint = " (is it the private key? verify takes the public one)" if not private and b"PRIVATE" in data else ""
        raise ConfigError(f"{show(path)}: not a usable PEM {what} key{hint} ({str(exc)[:120]}); "
                          "pass an unencrypted elliptic-curve key (P-256, P-384 or P-521)") from None
    pub = key.public_key() if private else key
    if not isinstance(pub, ec.EllipticCurvePublicKey) or pub.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
        raise ConfigError(f"{show(path)}: the {what} key must be an elliptic-curve P-256, P-384 or P-521 key")
    return key


def sign(folder: str | Path, key: str | Path, *, password: str | None = None) -> dict:
    """Check the bundle's integrity, then write folder/model.sig signed with the PEM private key `key`."""
    from toolkit.output.bundle import check_integrity

    ms = _model_signing()
    folder, key = Path(folder), Path(key)
    _load_key(key, private=True, password=password)
    check_integrity(folder)   # never sign a bundle that would not verify
    target = folder / SIGNATURE
    partial = folder / f".{SIGNATURE}.partial"
    try:
        # Hashing happens before the signature is written, so the partial file is never part of what is signed.
        ms.signing.Config().set_hashing_config(_hashing_config(ms)) \
            .use_elliptic_key_signer(private_key=key, password=password).sign(folder, partial)
        os.replace(partial, target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise GateFailed(f"{show(target)}: cannot be written ({exc.strerror}); check the folder's permissions") from None
    except Exception as exc:  # noqa: BLE001  third-party signer: any failure becomes one line naming the key
        partial.unlink(missing_ok=True)
        raise ConfigError(f"{show(key)}: signing failed ({type(exc).__name__}: {str(exc)[:200]})") from None
    return {"bundle": str(folder), "signature": str(target), "files_signed": _signed(target)[1]}


def _signed(signature: Path) -> tuple[list[str], int]:
    """(ignored paths, number of files) from the signature's payload (only read after it verified)."""
    envelope = json.loads(signature.read_text())["dsseEnvelope"]
    predicate = json.loads(base64.b64decode(envelope["payload"]))["predicate"]
    return list(predicate["serialization"].get("ignore_paths", [])), len(predicate["resources"])


def verify_signature(folder: str | Path, public_key: str | Path) -> str:
    """Check folder/model.sig against the PEM public key; raise GateFailed (one line) when it does not verify."""
    ms = _model_signing()
    folder, public_key = Path(folder), Path(public_key)
    _load_key(public_key, private=False)
    signature = folder / SIGNATURE
    if not signature.is_file():
        raise GateFailed(f"{show(signature)}: missing; the bundle is not signed (sign it with optkit sign BUNDLE "
                         "--key KEY.pem) or verify without --public-key")
    walk(folder)   # no symlink or special file for model-signing to follow
    try:
        ms.verifying.Config().use_elliptic_key_verifier(public_key=public_key).verify(folder, signature)
        ignored, count = _signed(signature)
    except Exception as exc:  # noqa: BLE001  a forged or damaged signature may fail anywhere in the parser
        raise GateFailed(f"{show(signature)}: the signature does not verify with {show(public_key)} "
                         f"({type(exc).__name__}: {str(exc)[:300]}); the bundle was changed after signing or "
                         "signed with another key") from None
    # The key holder chose what to leave out; a signature that leaves out more than optkit does covers too little.
    if not set(ignored) <= set(UNSIGNED):
        raise GateFailed(f"{show(signature)}: signed with files left out ({', '.join(map(show, ignored))}); "
                         f"re-sign with optkit sign, which leaves out only {', '.join(UNSIGNED)}")
    return f"verified with {public_key.name}: {count} files signed"
