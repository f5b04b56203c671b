"""Every device profile in devices/ loads, and the loader's errors say what to do."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from toolkit.pipeline.devices import DEVICES_DIR, device_names, load_device
from toolkit.core.errors import ConfigError

PROFILES = sorted(DEVICES_DIR.glob("*.yaml"))
EXPECTED = {"jetson-orin-nano", "jetson-agx-orin", "raspberry-pi-5", "x86-avx512",
            "intel-core-laptop", "nvidia-t4", "arm64-generic"}


def test_catalog_has_the_agreed_devices():
    assert EXPECTED <= set(device_names())


@pytest.mark.parametrize("path", PROFILES, ids=[p.stem for p in PROFILES])
def test_profile_loads_and_is_consistent(path: Path):
    dev = load_device(path.stem)
    assert dev.name == path.stem
    assert dev.description.strip()
    assert dev.accelerators, "list at least the CPU"
    for acc in dev.accelerators:
        assert acc.source.strip(), f"{acc.name}: every spec needs a source"
    assert len(set(dev.backends)) == len(dev.backends)
    assert len(set(dev.precisions)) == len(dev.precisions)
    # The stand-in must be able to run off the target; TensorRT cannot.
    assert dev.stand_in.backend != "tensorrt" and dev.stand_in.note.strip()
    assert dev.stand_in.backend in dev.backends
    assert set(dev.bench.batch_sizes) >= {1}
    assert load_device(str(path)) == dev          # by path as well as by name


def test_aliases_are_unique_and_do_not_shadow_names():
    seen: dict[str, str] = {}
    names = set(device_names())
    for path in PROFILES:
        for alias in load_device(path.stem).aliases:
            assert alias not in names, f"{alias} is also a device name"
            assert alias not in seen, f"{alias} used by {seen.get(alias)} and {path.stem}"
            seen[alias] = path.stem


def test_jetson_alias_resolves():
    assert load_device("jetson").name == "jetson-orin-nano"


def test_x86_uses_its_engine_recipe():
    assert load_device("x86-avx512").default_recipe == "x86-engines"
    assert {load_device(p.stem).default_recipe for p in PROFILES if p.stem not in ("x86-avx512", "x86-avx2")} == {"default"}


def test_unknown_key_in_a_copied_profile_is_a_config_error(tmp_path):
    data = yaml.safe_load((DEVICES_DIR / "raspberry-pi-5.yaml").read_text())
    data["budgets"]["latency_p59_ms"] = 20
    copy = tmp_path / "my-pi.yaml"
    copy.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="latency_p59_ms") as err:
        load_device(str(copy))
    assert "unknown key" in str(err.value) and str(copy) in str(err.value)


def test_unknown_device_lists_the_valid_names():
    with pytest.raises(ConfigError) as err:
        load_device("jetson-xavier-nx")
    msg = str(err.value)
    assert "jetson-xavier-nx" in msg
    for name in device_names():
        assert name in msg
