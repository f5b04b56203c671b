"""Every YAML in recipes/ loads; recipes are validated once, with errors that name the problem."""
from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.core.errors import ConfigError
from toolkit.pipeline.recipes import RECIPES_DIR, load_recipe


@pytest.mark.parametrize("path", sorted(RECIPES_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_recipe_loads(path: Path):
    recipe = load_recipe(path)
    assert recipe.name == path.stem and recipe.steps


@pytest.mark.parametrize("body,match", [
    ("name: r\nsteps:\n  - {id: a, pass: export_onx}\n", "unknown pass 'export_onx'"),
    ("name: r\nsteps:\n  - {id: a, pass: export_onnx, from: b}\n", "names no earlier step"),
    ("name: r\nsteps:\n  - {id: a, pass: export_onnx}\n  - {id: a, pass: onnx_fp16, from: a}\n", "used twice"),
    ("name: r\nsteps:\n  - {id: a, pass: ort_static_int8, options: {calibraton: minmax}}\n", "calibraton: unknown key"),
    ("name: r\nsteps:\n  - {id: a, pass: ort_static_int8, options: {calibration: kl}}\n", "calibration"),
    ("name: r\nseed: abc\nsteps:\n  - {id: a, pass: export_onnx}\n", "seed"),
    ("name: r\nsteps:\n  - !!python/object/apply:os.system ['echo hi']\n", "not valid YAML"),
    ("- just\n- a list\n", "must be a YAML mapping"),
])
def test_bad_recipes_fail_with_the_reason(tmp_path, body, match):
    path = tmp_path / "r.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=match) as err:
        load_recipe(path)
    assert "\n" not in str(err.value)


def test_unknown_recipe_name_lists_choices():
    with pytest.raises(ConfigError, match="choose one of: .*default"):
        load_recipe("no-such-recipe")
