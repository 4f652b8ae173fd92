"""Fashion-MNIST from the Debian package, and the fashion_cnn recipe trained from it."""
from __future__ import annotations

import gzip

import numpy as np
import pytest

from harness.core.errors import HarnessError
from harness.zoo import DATASETS
from harness.zoo.fashion import FASHION_DIR, SMALL_TRAIN_SAMPLES, load_split, read_idx

from helpers import ROOT, session_cache_dir

pytestmark = pytest.mark.skipif(not FASHION_DIR.exists(), reason="dataset-fashion-mnist not installed "
                                "(make system-deps)")


def test_fashion_mnist_loads_the_published_splits_from_the_debian_files():
    data = DATASETS.get("fashion_mnist")()
    assert data.x_train.shape == (60000, 28, 28, 1) and data.x_eval.shape == (10000, 28, 28, 1)
    assert data.x_train.dtype == np.float32 and 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    assert data.y_train.shape == (60000,) and data.y_eval.shape == (10000,)
    for labels in (data.y_train, data.y_eval):
        assert set(np.unique(labels)) == set(range(10))
    # the published splits are balanced: 6000 and 1000 images per class
    assert np.bincount(data.y_train).tolist() == [6000] * 10
    assert np.bincount(data.y_eval).tolist() == [1000] * 10


def test_small_subset_is_seeded_and_keeps_the_full_test_split():
    a, b = DATASETS.get("fashion_mnist_small")(seed=0), DATASETS.get("fashion_mnist_small")(seed=0)
    assert a.x_train.shape == (SMALL_TRAIN_SAMPLES, 28, 28, 1) and len(a.y_eval) == 10000
    assert np.array_equal(a.y_train, b.y_train) and np.array_equal(a.x_eval, b.x_eval)
    other = DATASETS.get("fashion_mnist_small")(seed=1)
    assert not np.array_equal(a.y_train, other.y_train)


def test_missing_files_say_how_to_install_them(tmp_path):
    with pytest.raises(HarnessError, match=r"make system-deps.*apt-get install -y dataset-fashion-mnist"):
        load_split("train", tmp_path)


def test_truncated_idx_file_is_an_error_that_says_so(tmp_path):
    good = gzip.open(FASHION_DIR / "t10k-labels-idx1-ubyte.gz").read()
    bad = tmp_path / "labels.gz"
    bad.write_bytes(gzip.compress(good[:-10]))
    with pytest.raises(HarnessError, match="truncated"):
        read_idx(bad)


@pytest.mark.slow
def test_fashion_cnn_recipe_trains_to_at_least_85_percent():
    """The real recipe (12,000 training images, fixed seed), scored on the 10,000 test images."""
    from harness.prepare.reference import prepare_model
    from harness.prepare.cache import ContentCache
    from harness.schema.recipes import load_recipe

    recipe = load_recipe("fashion_cnn", ROOT / "models")
    prepared = prepare_model(recipe, ContentCache(session_cache_dir()))
    assert prepared.reference_accuracy >= 0.85
    assert len(prepared.labels()) == 10000
    from harness.judge.evaluate import read_outputs
    outputs = read_outputs(prepared.reference_outputs_path)["logits"]
    assert outputs.shape == (10000, 1, 10)  # samples first, each the model's whole [1, 10] output
    outputs = outputs[:, 0]
    assert float((outputs.argmax(axis=1) == prepared.labels()).mean()) == pytest.approx(prepared.reference_accuracy)
