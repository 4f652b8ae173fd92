"""Property-based tests: whatever a config file holds, the loaders return a spec or raise ConfigError."""
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.core.errors import ConfigError
from harness.schema.recipes import load_recipe
from harness.schema.targets import load_target

scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=False),
                    st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)
TARGET_KEYS = ["name", "transport", "host", "port", "user", "key_file", "known_hosts", "host_key_policy", "python",
               "workdir", "arch", "runtimes", "threads", "budgets", "connect_timeout_s", "lock_timeout_s", "bogus"]
RECIPE_KEYS = ["name", "framework", "builder", "input", "output", "data", "train", "formats", "variants", "seed",
               "options", "bogus"]


def load_from(tmp_path, loader, document):
    path = tmp_path / "conf.yaml"
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document))
    try:
        return loader(str(path))
    except ConfigError as exc:
        assert str(path) in str(exc), "every config error names its file"
        return exc


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(TARGET_KEYS), values, max_size=8))
def test_target_loader_never_crashes(tmp_path, document):
    load_from(tmp_path, load_target, document)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(RECIPE_KEYS), values, max_size=8))
def test_recipe_loader_never_crashes(tmp_path, document):
    load_from(tmp_path, load_recipe, document)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=80))
def test_arbitrary_text_is_a_config_error_or_a_spec(tmp_path, text):
    result = load_from(tmp_path, load_target, text)
    assert isinstance(result, ConfigError) or result.name


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["threads", "port", "connect_timeout_s"]), st.one_of(st.text(max_size=5), st.lists(st.integers(), max_size=2)))
def test_wrong_types_name_the_field(tmp_path, key, value):
    result = load_from(tmp_path, load_target, {"name": "dev", key: value})
    assert isinstance(result, ConfigError) and key in str(result)
