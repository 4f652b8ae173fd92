"""Every shipped target and model recipe loads through the strict loader; mistakes name file and field."""
from pathlib import Path

import pytest

from harness.core.errors import ConfigError
from harness.schema.recipes import list_recipe_names, load_recipe
from harness.schema.targets import list_target_names, load_target

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("directory,name", [("targets", n) for n in list_target_names(ROOT / "targets")]
                         + [("targets/examples", n) for n in list_target_names(ROOT / "targets/examples")])
def test_every_target_file_loads(directory, name):
    target = load_target(name, ROOT / directory)
    assert target.name == name
    assert target.budgets.latency_p99_ms > 0


def test_example_devices_are_not_enabled_targets():
    """A fresh clone's nightly profiles targets/*.yaml: the example real devices must not be there."""
    examples = set(list_target_names(ROOT / "targets/examples"))
    assert {"pi4", "jetson", "x86"} <= examples
    assert not examples & set(list_target_names(ROOT / "targets"))


def test_example_devices_say_where_their_power_is_read():
    """docs/energy.md: a Jetson's INA3221 input rail, RAPL on x86, nothing on a Pi 4 (no current sensing)."""
    power = {name: load_target(name, ROOT / "targets/examples").power for name in ("jetson", "pi4", "x86")}
    assert (power["jetson"].source, power["jetson"].rail) == ("ina3221", "VDD_IN")
    assert power["x86"].source == "rapl" and power["pi4"].source == "none"
    pi4 = (ROOT / "targets/examples/pi4.yaml").read_text()
    assert "no current sensing" in pi4 and "#   source: command" in pi4, "the meter example, commented"
    assert "99-rapl.rules" in (ROOT / "targets/examples/x86.yaml").read_text()
    for name in ("jetson", "pi4", "x86"):
        assert (ROOT / "targets/examples" / f"{name}.yaml").read_text() == \
            (ROOT / "harness/templates/targets/examples" / f"{name}.yaml").read_text(), "what `harness init` copies"


@pytest.mark.parametrize("name", list_recipe_names(ROOT / "models"))
def test_every_model_recipe_loads(name):
    recipe = load_recipe(name, ROOT / "models")
    assert recipe.name == name
    assert recipe.input.shape[0] == 1


def test_local_target_is_default_and_local():
    target = load_target("local", ROOT / "targets")
    assert target.is_local and set(target.runtimes) == {"tflite", "onnx", "openvino", "torch"}


def test_unknown_field_names_file_and_key(tmp_path):
    path = tmp_path / "dev.yaml"
    path.write_text("name: dev\ntransport: local\nthreds: 4\n")
    with pytest.raises(ConfigError) as info:
        load_target(str(path))
    assert str(path) in str(info.value) and "threds" in str(info.value) and "threads" in str(info.value)


def test_wrong_type_in_nested_field_is_named(tmp_path):
    path = tmp_path / "dev.yaml"
    path.write_text("name: dev\nbudgets:\n  latency_p99_ms: fast\n")
    with pytest.raises(ConfigError, match=r"budgets\.latency_p99_ms.*expected a number"):
        load_target(str(path))


def test_ssh_target_without_host_is_refused(tmp_path):
    path = tmp_path / "pi.yaml"
    path.write_text("name: pi\ntransport: ssh\nuser: pi\n")
    with pytest.raises(ConfigError, match="host"):
        load_target(str(path))


def test_missing_target_lists_known_ones():
    with pytest.raises(ConfigError, match="known targets: .*local"):
        load_target("no-such-device", ROOT / "targets")


def test_recipe_missing_required_field(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("name: m\ninputs: [{name: x, shape: [1, 2]}]\ndata: {dataset: sklearn_digits}\n")
    with pytest.raises(ConfigError, match="'source'.*required"):
        load_recipe(str(path))


def test_recipe_unknown_format(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("name: m\nsource: {path: m.onnx}\nformats: [tflite, coreml]\n")
    with pytest.raises(ConfigError, match="formats.*coreml"):
        load_recipe(str(path))


def test_model_file_recipe_paths_are_relative_to_the_recipe(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "m.yaml"
    path.write_text("name: m\nsource: {path: ../det.onnx}\ndata: {npz: eval.npz}\n")
    recipe = load_recipe(str(path))
    assert recipe.resolve(recipe.source.path) == (tmp_path / "det.onnx").resolve()
    assert recipe.resolve(recipe.data.npz) == (tmp_path / "sub" / "eval.npz").resolve()


def test_image_data_preprocessing_is_checked_when_the_recipe_loads(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("name: m\nsource: {path: m.onnx}\n"
                    "data: {images: imgs, preprocessing: {layout: NWHC}}\n")
    with pytest.raises(ConfigError, match="data.preprocessing.*NCHW or NHWC"):
        load_recipe(str(path))


def test_yaml_syntax_error_names_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: dev\nbudgets: [\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line"):
        load_target(str(path))
