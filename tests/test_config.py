"""params.yaml validation: every mistake is a one-line ConfigError naming the key and the fix."""

import copy

import pytest
import yaml

from distillery.config import ConfigError, load_params, validate
from tests.conftest import REPO


@pytest.fixture(scope="module")
def base():
    return yaml.safe_load((REPO / "params.yaml").read_text())


def _error(base, mutate) -> str:
    params = copy.deepcopy(base)
    mutate(params)
    with pytest.raises(ConfigError) as info:
        validate(params)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_repository_params_are_valid():
    load_params(REPO / "params.yaml")


def test_unknown_top_level_key_names_nearest(base):
    assert "did you mean 'method'" in _error(base, lambda p: p.update(methd="kd"))


def test_unknown_group_key_names_nearest(base):
    message = _error(base, lambda p: p["training"].update(weight_decy=0.1))
    assert "training.weight_decy" in message and "did you mean 'weight_decay'" in message


def test_unknown_method_names_nearest(base):
    assert "did you mean 'rkd'" in _error(base, lambda p: p.update(method="rdk"))


def test_unknown_method_group_and_hyperparameter(base):
    assert "methods.kdd" in _error(base, lambda p: p["methods"].update(kdd={}))
    assert "did you mean 'temperature'" in _error(base, lambda p: p["methods"]["kd"].update(temprature=3.0))


def test_unknown_dataset_names_nearest(base):
    assert "did you mean 'fashion_mnist'" in _error(base, lambda p: p.update(dataset="fashion_mnst"))
    assert "not a known dataset" in _error(base, lambda p: p["data"]["fashion_mnist"].update(reader="fmnist"))


def test_wrong_types_and_ranges(base):
    assert "training.lr must be > 0" in _error(base, lambda p: p["training"].update(lr=-0.1))
    assert "training.epochs must be an integer" in _error(base, lambda p: p["training"].update(epochs="ten"))
    assert "methods.kd.kd_weight must be >= 0" in _error(base, lambda p: p["methods"]["kd"].update(kd_weight=-1.0))
    assert "did you mean" in _error(base, lambda p: p["teacher"].update(model="convnet_x"))


def test_focus_dataset_must_be_in_benchmark(base):
    def mutate(p):
        p["data"]["other"] = copy.deepcopy(p["data"]["fashion_mnist"])
        p["dataset"] = "other"
    assert "benchmark.datasets" in _error(base, mutate)


def test_classification_override_is_validated_and_merged(base):
    from distillery.config import method_options

    assert "methods.kd.classification.temprature" in _error(
        base, lambda p: p["methods"]["kd"].update(classification={"temprature": 4.0}))
    assert "must be a mapping" in _error(base, lambda p: p["methods"]["kd"].update(classification=4.0))
    assert "methods.dkd.ce_weight must be >= 0" in _error(base, lambda p: p["methods"]["dkd"].update(ce_weight=-1.0))
    params = copy.deepcopy(base)
    params["methods"]["kd"] = {"kd_weight": 1.0, "temperature": 2.0, "classification": {"temperature": 4.0}}
    assert method_options(params, "kd") == {"kd_weight": 1.0, "temperature": 2.0}
    assert method_options(params, "kd", "classification") == {"kd_weight": 1.0, "temperature": 4.0}


def test_benchmark_datasets_match_their_task(base):
    assert "move it to benchmark_cls.datasets" in _error(
        base, lambda p: p["benchmark"]["datasets"].append("fashion_mnist_cls"))
    assert "move it to benchmark.datasets" in _error(
        base, lambda p: p["benchmark_cls"]["datasets"].append("fashion_mnist"))
    assert "teacher_cls.lr_decay_epochs must be a list of epoch numbers" in _error(
        base, lambda p: p["teacher_cls"].update(lr_decay_epochs=["ten"]))
    params = copy.deepcopy(base)
    params.update(dataset="fashion_mnist_cls", method="dkd")  # the focus experiment may be either task
    validate(params)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)
