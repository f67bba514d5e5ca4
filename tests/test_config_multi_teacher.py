"""params.yaml keys of the multi-teacher workflow: extra teachers, method groups with `method` / `student`,
benchmark.teachers / multi_teacher_methods, evaluation.scales, data train_from / crop_queries."""

import copy
from pathlib import Path

import pytest
import yaml

from distillery.config import ConfigError, method_class, method_options, student_group, teacher_group, validate

PARAMS = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())


def _with(**changes):
    p = copy.deepcopy(PARAMS)
    for path, value in changes.items():
        *keys, last = path.split("__")
        node = p
        for key in keys:
            node = node[key]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return p


DELETE = object()


def test_default_params_hold_the_multi_teacher_experiment():
    p = validate(copy.deepcopy(PARAMS))
    assert p["benchmark"]["teachers"] == ["teacher_b"]
    assert p["benchmark"]["multi_teacher_methods"] == ["whiten_mtd", "whiten_mtd_nowhiten"]
    assert method_class(p, "whiten_mtd_nowhiten") == "whiten_mtd" and method_class(p, "kd") == "kd"
    on, off = method_options(p, "whiten_mtd"), method_options(p, "whiten_mtd_nowhiten")
    assert on["whiten"] is True and off["whiten"] is False
    assert {k: v for k, v in on.items() if k != "whiten"} == {k: v for k, v in off.items() if k != "whiten"}
    assert "student" not in on and "method" not in off
    assert student_group(p, "whiten_mtd")["model_options"]["pooling"] == "gem"
    assert student_group(p, "kd") == p["student"]
    assert teacher_group(p, "teacher_b")["seed"] == 1 and teacher_group(p) is p["teacher"]


def test_optional_keys_may_be_left_out():
    validate(_with(teachers=DELETE, benchmark__teachers=DELETE, benchmark__multi_teacher_methods=DELETE,
                   methods__whiten_mtd__teachers=["teacher"], methods__whiten_mtd_nowhiten__teachers=["teacher"],
                   evaluation__scales=DELETE, teacher__seed=DELETE, teacher__checkpoint=DELETE))


@pytest.mark.parametrize("changes, message", [
    ({"methods__whiten_mtd__teachers": ["teacher", "teacher_c"]}, "'teacher_c' is not trained"),
    ({"benchmark__teachers": ["teacher_c"]}, "teacher_c"),
    ({"benchmark__methods": ["kd", "whiten_mtd"]}, "multi_teacher_methods"),
    ({"benchmark__multi_teacher_methods": ["kd"]}, "single-teacher method"),
    ({"benchmark__multi_teacher_methods": ["whiten_mdt"]}, "no group under methods"),
    ({"methods__whiten_mtd_nowhiten__method": "whiten_mdt"}, "did you mean 'whiten_mtd'"),
    ({"methods__whiten_mtd__student": {"model_option": {}}}, "methods.whiten_mtd.student.model_option"),
    ({"methods__whiten_mtd__student": {"resolution": 4}}, "resolution must be >= 8"),
    ({"methods__whiten_mtd__teachers": "teacher"}, "must be a list"),
    ({"methods__whiten_mtd__strategy": 3}, "must be a string"),
    ({"teachers__teacher_b__seed": -1}, "teachers.teacher_b.seed"),
    ({"teachers__teacher_b__epochs": DELETE}, "teachers.teacher_b is missing epochs"),
    ({"teachers__teacher": PARAMS["teacher"]}, "other than 'teacher'"),
    ({"data__roxford5k__train_from__reader": "gld"}, "train_from.reader"),
    ({"data__roxford5k__crop_queries": "yes"}, "crop_queries"),
    ({"evaluation__scales": 1.0}, "evaluation.scales"),
])
def test_errors_are_one_line_and_name_the_key(changes, message):
    with pytest.raises(ConfigError, match=message) as err:
        validate(_with(**changes))
    assert "\n" not in str(err.value)


def test_unknown_teacher_name():
    with pytest.raises(ConfigError, match="teacher_c"):
        teacher_group(PARAMS, "teacher_c")
