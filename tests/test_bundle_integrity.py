"""A bundle proves its integrity: manifest digest, path rules, a walk that sees every entry, signatures.

One real bundle (the shared demo_run, a jetson compress with a TensorRT build script) is copied per test; every tamper
class must fail with a one-line GateFailed naming the file, and random manifest mutations must fail or be no-ops.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import toolkit
from toolkit.output.manifest import DIGEST_KEY, canonical_bytes, seal
from toolkit.cli.app import app
from toolkit.core.errors import ConfigError, GateFailed, OptkitError

try:
    from typer.testing import CliRunner
except ImportError:  # pragma: no cover
    CliRunner = None

runner = CliRunner()


@pytest.fixture(scope="module")
def pristine(demo_run, tmp_path_factory):
    """A verified copy of the demo bundle that no test touches (tests copy it again)."""
    src = shutil.copytree(demo_run.run_dir / "bundle", tmp_path_factory.mktemp("pristine") / "bundle")
    assert toolkit.verify(src)["ok"]
    return src


@pytest.fixture
def bundle(pristine, tmp_path):
    return Path(shutil.copytree(pristine, tmp_path / "bundle"))


def manifest_of(b: Path) -> dict:
    return json.loads((b / "manifest.json").read_text())


def write_manifest(b: Path, m: dict, *, reseal: bool = False) -> None:
    (b / "manifest.json").write_text(json.dumps(seal(m) if reseal else m))


def fails(b: Path, match: str, **kw) -> str:
    with pytest.raises(GateFailed) as info:
        toolkit.verify(b, **kw)
    msg = str(info.value)
    assert "\n" not in msg and match in msg, msg
    return msg


# ------------------------------------------------------------------ the manifest's own digest
def test_manifest_is_sealed_and_reformatting_is_a_no_op(bundle):
    m = manifest_of(bundle)
    assert m["format_version"] == 2 and len(m[DIGEST_KEY]) == 64
    # what integrators can recompute in one line
    import hashlib
    assert hashlib.sha256(canonical_bytes(m)).hexdigest() == m[DIGEST_KEY]
    assert not any(k.startswith(("manifest.json", "model.sig", "engine")) for k in m["sha256"])
    (bundle / "manifest.json").write_text(json.dumps(dict(reversed(list(m.items()))), indent=7))
    assert toolkit.verify(bundle)["ok"]


@pytest.mark.parametrize("edit", [
    lambda m: m["metrics"].__setitem__("macro_f1", 0.999),
    lambda m: m["confidence"].__setitem__("temperature", 2.5),  # not 1.0: T = 1 ships when fitting does not help
    lambda m: m["fixtures"].__setitem__("atol", 1e9),
    lambda m: m["labels"].reverse(),
    lambda m: m.__setitem__("device", "x86-avx512"),
    lambda m: m["model"].__setitem__("precision", "fp32"),
    lambda m: m.pop("build"),
    lambda m: m.__setitem__(DIGEST_KEY, "0" * 64),
], ids=["metric", "temperature", "atol", "labels", "device", "precision", "build-removed", "digest"])
def test_any_edited_field_fails(bundle, edit):
    m = manifest_of(bundle)
    edit(m)
    write_manifest(bundle, m)
    fails(bundle, "manifest_sha256 does not match")


# ------------------------------------------------------------------ paths (a consistent attacker re-seals)
@pytest.mark.parametrize("bad", ["/etc/passwd", "../outside.bin", "model/../../x", "C:/model.onnx", "model\\model.onnx",
                                 "model//model.onnx", "./model/model.onnx", "model/\x00x", "~/x"])
def test_paths_must_be_relative_and_confined(bundle, bad):
    m = manifest_of(bundle)
    m["sha256"][bad] = "0" * 64
    write_manifest(bundle, m, reseal=True)
    msg = fails(bundle, "invalid manifest at sha256")
    assert "manifest.json" in msg


def test_model_file_outside_the_hash_list_is_refused(bundle):
    m = manifest_of(bundle)
    m["model"]["file"] = "../../etc/passwd"
    write_manifest(bundle, m, reseal=True)
    fails(bundle, "invalid manifest at model.file")
    m["model"]["file"] = "MODEL_CARD.md.unlisted"
    write_manifest(bundle, m, reseal=True)
    fails(bundle, "model.file MODEL_CARD.md.unlisted has no sha256 entry")


def test_reserved_names_cannot_be_listed(bundle):
    m = manifest_of(bundle)
    (bundle / "engine").mkdir()
    (bundle / "engine" / "x.engine").write_bytes(b"e")
    from toolkit.core.artifacts import file_sha256
    m["sha256"]["engine/x.engine"] = file_sha256(bundle / "engine" / "x.engine")
    write_manifest(bundle, m, reseal=True)
    fails(bundle, "a name the bundle reserves")


# ------------------------------------------------------------------ the walk
def test_symlink_pointing_out_fails(bundle, tmp_path):
    (tmp_path / "secret").write_text("x")
    os.symlink(tmp_path / "secret", bundle / "fixtures" / "link")
    fails(bundle, "fixtures/link: a symlink inside the bundle")


def test_symlink_pointing_in_fails_even_when_listed(bundle):
    # replace a listed file by a link to an identical copy: the hash matches, the link is still refused
    model = bundle / manifest_of(bundle)["model"]["file"]
    shutil.copy2(model, bundle / "model" / "copy.bin")
    model.unlink()
    os.symlink("copy.bin", model)
    fails(bundle, "a symlink inside the bundle")


def test_symlinked_folder_fails(bundle):
    os.symlink(bundle / "model", bundle / "fixtures" / "loop")
    fails(bundle, "fixtures/loop: a symlink")


def test_extra_file_fails(bundle):
    (bundle / "model" / "payload.py").write_text("print('hi')")
    fails(bundle, "model/payload.py: not listed in the manifest")


def test_hidden_file_fails(bundle):
    (bundle / "fixtures" / ".hidden").write_text("x")
    fails(bundle, "fixtures/.hidden: not listed in the manifest")


def test_empty_unlisted_folder_fails(bundle):
    (bundle / "model" / "extra").mkdir()
    fails(bundle, "model/extra: a folder the manifest does not list")


def test_fifo_fails(bundle):
    os.mkfifo(bundle / "model" / "pipe")
    fails(bundle, "model/pipe: a special file")


def test_missing_file_fails(bundle):
    (bundle / "MODEL_CARD.md").unlink()
    fails(bundle, "MODEL_CARD.md: listed in the manifest but missing")


def test_changed_file_fails(bundle):
    (bundle / "MODEL_CARD.md").write_text("# not the card")
    fails(bundle, "MODEL_CARD.md: sha256 does not match")


# ------------------------------------------------------------------ malformed manifests
@pytest.mark.parametrize("text,match", [
    ("{not json", "not valid JSON"),
    ("", "not valid JSON"),
    ("[1, 2]", "must be a JSON object, got list"),
    ('"a string"', "must be a JSON object, got str"),
    ("null", "must be a JSON object, got NoneType"),
    ('{"format_version": 2, "format_version": 2}', "duplicate key"),
    ('{"format_version": NaN}', "not valid JSON"),
    ('{"format_version": 1e400}', "not valid JSON"),
    ("[" * 100000 + "]" * 100000, "not valid JSON"),
    ('{"format_version": 1}', "older optkit"),
    ('{"format_version": "2"}', "format_version"),
    ('{"format_version": 2}', "no manifest_sha256"),
    (b"\xff\xfe{}".decode("latin-1"), "not valid JSON"),
], ids=["syntax", "empty", "list", "str", "null", "dup-key", "nan", "overflow", "deep", "v1", "str-version", "no-digest",
        "not-utf8"])
def test_malformed_manifest_is_one_line(bundle, text, match):
    (bundle / "manifest.json").write_bytes(text.encode("latin-1") if text.startswith("\xff") else text.encode())
    fails(bundle, match)


def test_huge_manifest_is_refused_before_parsing(bundle):
    with open(bundle / "manifest.json", "wb") as f:
        f.truncate(9 * 1024 * 1024)
    fails(bundle, "more than a manifest can be")


@pytest.mark.parametrize("path,value,match", [
    (("fixtures", "rows"), "8", "fixtures.rows"),
    (("fixtures", "atol"), -1.0, "fixtures.atol"),
    (("model", "files"), "model/model.onnx", "model.files"),
    (("labels",), {"0": "a"}, "labels"),
    (("sha256",), [], "sha256"),
    (("model", "unknown_key"), 1, "model.unknown_key"),
    (("io",), None, "io"),
    (("sha256", "MODEL_CARD.md"), "ABC", "sha256.MODEL_CARD.md"),
], ids=["rows-str", "atol-negative", "files-str", "labels-dict", "sha-list", "extra-key", "io-null", "bad-hex"])
def test_wrong_types_are_one_line_even_when_resealed(bundle, path, value, match):
    m = manifest_of(bundle)
    node = m
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    write_manifest(bundle, m, reseal=True)
    fails(bundle, f"invalid manifest at {match}")


def test_missing_key_is_one_line(bundle):
    m = manifest_of(bundle)
    del m["fixtures"]
    write_manifest(bundle, m, reseal=True)
    fails(bundle, "invalid manifest at fixtures: Field required")


# ------------------------------------------------------------------ property: random mutations never pass altered
def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


_values = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=12), st.just("../x"), st.just("/abs"), st.just([]), st.just({}),
                    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))


def _mutate(m: dict, data) -> dict:
    m = copy.deepcopy(m)
    paths = list(_paths(m))
    path = data.draw(st.sampled_from(paths), label="path")
    op = data.draw(st.sampled_from(["set", "delete", "insert", "swap-type", "reformat"]), label="op")
    if op == "reformat" or not path and op != "set":
        return m
    if not path:
        return data.draw(_values, label="root")      # replace the whole manifest by a scalar/list/dict
    parent = m
    for k in path[:-1]:
        parent = parent[k]
    key = path[-1]
    if op == "set":
        parent[key] = data.draw(_values, label="value")
    elif op == "delete":
        del parent[key]
    elif op == "insert":
        if isinstance(parent, list):
            parent.insert(key, data.draw(_values, label="value"))
        else:
            parent[data.draw(st.text(min_size=1, max_size=8), label="new key")] = data.draw(_values, label="value")
    else:
        v = parent[key]
        parent[key] = (str(v) if not isinstance(v, str) else ([v] if data.draw(st.booleans()) else len(v)))
    return m


def _check_mutation(bundle_dir: Path, original: dict, mutated, *, reseal: bool, **kw) -> str:
    payload = seal(mutated) if reseal and isinstance(mutated, dict) else mutated
    (bundle_dir / "manifest.json").write_text(json.dumps(payload, indent=1))
    try:
        toolkit.verify(bundle_dir, **kw)
    except OptkitError as exc:   # typed, one line
        assert "\n" not in str(exc)
        return f"failed: {type(exc).__name__}: {str(exc).split(': ', 2)[1][:40]}"
    finally:
        (bundle_dir / "manifest.json").write_text(json.dumps(original, indent=2))
    # it passed: only allowed when the sealed content is what the bundle was written with
    if not reseal:
        assert isinstance(mutated, dict) and canonical_bytes(mutated) == canonical_bytes(original), "altered content passed"
    return "passed"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_mutations_fail_or_are_no_ops(pristine, tmp_path_factory, data):
    work = getattr(test_fuzz_mutations_fail_or_are_no_ops, "_work", None)
    if work is None:   # one copy for all examples: each example restores the manifest it changed
        work = shutil.copytree(pristine, tmp_path_factory.mktemp("fuzz") / "bundle")
        test_fuzz_mutations_fail_or_are_no_ops._work = work
    original = manifest_of(pristine)
    event(_check_mutation(work, original, _mutate(original, data), reseal=False))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_resealed_mutations_never_traceback(pristine, tmp_path_factory, data):
    """A consistent attacker re-seals: metadata edits can then pass (that is what signing is for), but never crash."""
    work = getattr(test_fuzz_resealed_mutations_never_traceback, "_work", None)
    if work is None:
        work = shutil.copytree(pristine, tmp_path_factory.mktemp("fuzz-sealed") / "bundle")
        test_fuzz_resealed_mutations_never_traceback._work = work
    original = manifest_of(pristine)
    event(_check_mutation(work, original, _mutate(original, data), reseal=True))


# ------------------------------------------------------------------ build_engine.sh writes outside model/
def test_build_script_writes_engine_outside_model(bundle, tmp_path):
    script = (bundle / "build_engine.sh").read_text()
    assert '--saveEngine="$out"/' in script and '--timingCacheFile="$out"/' in script
    fake = tmp_path / "bin"
    fake.mkdir()
    # a stand-in trtexec: writes the files its flags name, as the real one does
    (fake / "trtexec").write_text('#!/bin/sh\nfor a in "$@"; do case "$a" in --saveEngine=*) echo engine > "${a#*=}";; '
                                  '--timingCacheFile=*) echo cache > "${a#*=}";; --onnx=*) test -f "${a#*=}";; esac; done\n')
    (fake / "trtexec").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    subprocess.run(["sh", str(bundle / "build_engine.sh")], check=True, env=env, cwd=tmp_path)
    built = sorted(p.name for p in (bundle / "engine").iterdir())
    engine = f"{manifest_of(bundle)['build']['candidate']}.engine"
    assert built == sorted([engine, "timing.cache"])
    result = toolkit.verify(bundle)
    assert result["ok"] and len(result["engine_files"]) == 2
    # an explicit folder outside the bundle works; one inside model/ (or the bundle's root) is refused
    subprocess.run(["sh", str(bundle / "build_engine.sh"), str(tmp_path / "out")], check=True, env=env)
    assert len(list((tmp_path / "out").iterdir())) == 2
    for inside in (bundle / "model", bundle):
        r = subprocess.run(["sh", str(bundle / "build_engine.sh"), str(inside)], env=env, capture_output=True, text=True)
        assert r.returncode == 2 and "inside the bundle" in r.stderr
    assert toolkit.verify(bundle)["ok"]


def test_engine_folder_is_allowed_only_in_bundles_that_build(bundle):
    m = manifest_of(bundle)
    del m["build"]
    (bundle / "build_engine.sh").unlink()
    del m["sha256"]["build_engine.sh"]
    write_manifest(bundle, m, reseal=True)
    assert toolkit.verify(bundle)["ok"]
    (bundle / "engine").mkdir()
    (bundle / "engine" / "x.engine").write_bytes(b"e")
    fails(bundle, "engine/x.engine: not listed")


# ------------------------------------------------------------------ signing (OpenSSF model-signing, key-based)
@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    pytest.importorskip("model_signing", reason="optkit[sign] (model-signing) is not installed")
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import ec

    d = tmp_path_factory.mktemp("keys")

    def pair(name):
        k = ec.generate_private_key(ec.SECP256R1())
        (d / f"{name}.pem").write_bytes(k.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption()))
        (d / f"{name}.pub").write_bytes(k.public_key().public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo))
        return d / f"{name}.pem", d / f"{name}.pub"

    return pair("a"), pair("b")


def test_sign_then_verify(bundle, keys):
    (priv, pub), _ = keys
    r = runner.invoke(app, ["sign", str(bundle), "--key", str(priv)])
    assert r.exit_code == 0, r.stderr
    assert (bundle / "model.sig").is_file()
    r = runner.invoke(app, ["verify", str(bundle), "--public-key", str(pub)])
    assert r.exit_code == 0 and "verified with a.pub" in r.stdout, r.stderr
    assert "present, not checked" in toolkit.verify(bundle)["signature"]   # plain verify tolerates model.sig


def test_wrong_key_fails(bundle, keys):
    (priv, _), (_, other_pub) = keys
    toolkit.sign(bundle, priv)
    assert "b.pub" in fails(bundle, "the signature does not verify with", public_key=other_pub)
    r = runner.invoke(app, ["verify", str(bundle), "--public-key", str(other_pub)])
    assert r.exit_code == 3 and "does not verify" in r.stderr


def test_file_changed_after_signing_fails(bundle, keys):
    (priv, pub), _ = keys
    toolkit.sign(bundle, priv)
    # a consistent attacker: edits a metric and re-seals the manifest, so the plain verify passes...
    m = manifest_of(bundle)
    m["metrics"]["macro_f1"] = 0.999
    write_manifest(bundle, m, reseal=True)
    assert toolkit.verify(bundle)["ok"]
    # ...but not the signature
    fails(bundle, "model.sig: the signature does not verify", public_key=pub)


def test_engine_built_after_signing_keeps_the_signature(bundle, keys):
    (priv, pub), _ = keys
    toolkit.sign(bundle, priv)
    (bundle / "engine").mkdir()
    (bundle / "engine" / "x.engine").write_bytes(b"built on the device")
    assert toolkit.verify(bundle, public_key=pub)["ok"]


def test_unsigned_bundle_with_public_key_fails_clearly(bundle, keys):
    (_, pub), _ = keys
    fails(bundle, "model.sig: missing; the bundle is not signed", public_key=pub)
    r = runner.invoke(app, ["verify", str(bundle), "--public-key", str(pub)])
    assert r.exit_code == 3 and "not signed" in r.stderr


def test_bad_keys_are_config_errors(bundle, keys, tmp_path):
    (priv, pub), _ = keys
    with pytest.raises(ConfigError, match="not a usable PEM private key"):
        toolkit.sign(bundle, pub)
    toolkit.sign(bundle, priv)
    with pytest.raises(ConfigError, match="is it the private key"):
        toolkit.verify(bundle, public_key=priv)
    with pytest.raises(ConfigError, match="cannot be read"):
        toolkit.verify(bundle, public_key=tmp_path / "nope.pub")
    r = runner.invoke(app, ["sign", str(bundle), "--key", str(tmp_path / "nope.pem")])
    assert r.exit_code == 2 and "cannot be read" in r.stderr


def test_sign_refuses_a_damaged_bundle(bundle, keys):
    (priv, _), _ = keys
    (bundle / "extra.txt").write_text("x")
    with pytest.raises(GateFailed, match="extra.txt: not listed"):
        toolkit.sign(bundle, priv)
    assert not (bundle / "model.sig").exists()


def test_tampered_signature_file_fails(bundle, keys):
    (priv, pub), _ = keys
    toolkit.sign(bundle, priv)
    (bundle / "model.sig").write_text('{"dsseEnvelope": 1}')
    fails(bundle, "the signature does not verify", public_key=pub)
    (bundle / "model.sig").write_text("not json")
    fails(bundle, "the signature does not verify", public_key=pub)


def test_cli_verify_exit_codes(bundle):
    (bundle / "model" / "x").write_text("x")
    r = runner.invoke(app, ["verify", str(bundle)])
    assert r.exit_code == 3 and "not listed" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = runner.invoke(app, ["verify", str(bundle / "nope")])
    assert r.exit_code == 3
