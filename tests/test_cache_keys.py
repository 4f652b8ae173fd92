"""Cache keys follow the code that makes an entry: its module and the harness helpers it imports."""
import inspect
import subprocess
import sys

import harness.prepare.code_keys as build
from harness.prepare.converters import CONVERTERS
from harness.zoo import BUILDERS


def imported(func):
    module = sys.modules[func.__module__]
    return build.harness_modules_imported_by(module, inspect.getsource(module))


def test_lazy_imports_of_helpers_count():
    # keras_to_openvino goes through the shared ONNX→IR step; the Keras loader is imported inside the function
    assert "harness.prepare.converters.onnx" in imported(CONVERTERS.get(("keras", "openvino")))
    assert "harness.prepare.sources.tensorflow" in imported(CONVERTERS.get(("keras", "openvino")))
    # the digits builder trains through the shared Keras helper
    assert "harness.zoo.keras_util" in imported(BUILDERS.get("digits_cnn"))


def test_key_does_not_depend_on_what_was_imported_before():
    code = ("import harness.prepare.code_keys as b; from harness.prepare.converters import CONVERTERS; {pre}"
            "print(b.source_hash(CONVERTERS.get(('keras', 'openvino')), 'x'))")
    cold = subprocess.run([sys.executable, "-c", code.format(pre="")], capture_output=True, text=True, check=True)
    warm = subprocess.run([sys.executable, "-c", code.format(pre="import harness.prepare.sources.tensorflow; ")],
                          capture_output=True, text=True, check=True)
    assert cold.stdout.strip() == warm.stdout.strip() != ""


# ---------------------------------------------------------------- the one cached-step helper every build step uses
def test_a_step_fills_its_entry_once_and_then_reads_it(tmp_path):
    from harness.prepare.cache import ContentCache

    cache, calls = ContentCache(tmp_path), []

    def fill(scratch):
        calls.append(scratch)
        (scratch / "doc.json").write_text('{"n": 1}')

    first = cache.get_or_build("things", "k", fill)
    second = cache.get_or_build("things", "k", fill)
    assert (first.cached, second.cached) == (False, True) and len(calls) == 1
    assert first.path == second.path == cache.entry("things", "k") and second.read_json("doc.json") == {"n": 1}


def test_a_step_that_fails_leaves_no_entry_and_the_next_call_builds_again(tmp_path):
    import pytest
    from harness.prepare.cache import ContentCache

    cache = ContentCache(tmp_path)

    def broken(scratch):
        (scratch / "half.json").write_text("{")
        raise RuntimeError("converter crashed")

    with pytest.raises(RuntimeError, match="converter crashed"):
        cache.get_or_build("things", "k", broken)
    assert not cache.has("things", "k") and not list((tmp_path / "things").iterdir())
    assert cache.get_or_build("things", "k", lambda scratch: None).cached is False


def test_a_read_only_tracking_cache_stops_a_step_before_its_work(tmp_path):
    """The dask host probes a step against its cache without building: a missing entry stops it, a present
    one is remembered as an entry the step needs."""
    import pytest
    from harness.prepare.cache import ContentCache
    from harness.run.dask.workers import EntryMissing, TrackingCache

    ContentCache(tmp_path).get_or_build("things", "there", lambda scratch: None)
    probe = TrackingCache(tmp_path, read_only=True)

    def must_not_run(scratch):
        raise AssertionError("a read-only probe ran the step")

    assert probe.get_or_build("things", "there", must_not_run).cached
    with pytest.raises(EntryMissing):
        probe.get_or_build("things", "absent", must_not_run)
    assert probe.touched == {("things", "there")}
