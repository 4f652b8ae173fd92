"""Cache keys follow the code that makes an entry: its module and the harness helpers it imports."""
import inspect
import subprocess
import sys

import harness.build.steps as build
from harness.build.converters import CONVERTERS
from harness.zoo import BUILDERS


def imported(func):
    module = sys.modules[func.__module__]
    return build._harness_modules_imported_by(module, inspect.getsource(module))


def test_lazy_imports_of_helpers_count():
    # keras_to_openvino goes through the shared ONNX→IR step; the Keras loader is imported inside the function
    assert "harness.build.converters.onnx" in imported(CONVERTERS.get(("keras", "openvino")))
    assert "harness.build.sources.tensorflow" in imported(CONVERTERS.get(("keras", "openvino")))
    # the digits builder trains through the shared Keras helper
    assert "harness.zoo.keras_util" in imported(BUILDERS.get("digits_cnn"))


def test_key_does_not_depend_on_what_was_imported_before():
    code = ("import harness.build.steps as b; from harness.build.converters import CONVERTERS; {pre}"
            "print(b._source_hash(CONVERTERS.get(('keras', 'openvino')), 'x'))")
    cold = subprocess.run([sys.executable, "-c", code.format(pre="")], capture_output=True, text=True, check=True)
    warm = subprocess.run([sys.executable, "-c", code.format(pre="import harness.build.sources.tensorflow; ")],
                          capture_output=True, text=True, check=True)
    assert cold.stdout.strip() == warm.stdout.strip() != ""
