"""Load and validate ``params.yaml`` in one place.

Every key is checked against the schema below (groups ``teacher``, ``student``, ``training``, ...), every
``data.<name>`` entry against ``DATASET_SCHEMA``, and every ``methods.<name>`` group against the registered
method's constructor. Any problem is a ``ConfigError`` whose one-line message names the key, what is wrong and
the nearest valid choice.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml


class ConfigError(ValueError):
    """A bad parameter; the message is one line naming the key and the fix."""


def _nearest(name: str, choices) -> str:
    close = difflib.get_close_matches(str(name), sorted(choices), n=1, cutoff=0.5)
    if not close:  # 'learning_rate' -> 'lr': fall back to a shared word or prefix
        words = set(str(name).split("_"))
        close = [c for c in sorted(choices) if words & set(c.split("_")) or str(name).startswith(c)][:1]
    return f"; did you mean {close[0]!r}?" if close else f" (valid: {', '.join(sorted(choices))})"


@dataclass(frozen=True)
class Field:
    """One scalar parameter: its type, optional range or choices, and whether null is allowed."""

    kind: type | tuple
    min: float | None = None
    max: float | None = None
    choices: tuple | None = None
    nullable: bool = False
    positive: bool = False
    check: Callable[[Any], str | None] | None = None

    def validate(self, key: str, value: Any) -> None:
        if value is None:
            if self.nullable:
                return
            raise ConfigError(f"{key} must not be null")
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds:
            raise ConfigError(f"{key} must be {_kind_name(kinds)}, got {value!r}")
        if not isinstance(value, kinds):
            raise ConfigError(f"{key} must be {_kind_name(kinds)}, got {value!r} ({type(value).__name__})")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{key} = {value!r} is not valid{_nearest(value, self.choices)}")
        if self.positive and value <= 0:
            raise ConfigError(f"{key} must be > 0, got {value!r}")
        if self.min is not None and value < self.min:
            raise ConfigError(f"{key} must be >= {self.min}, got {value!r}")
        if self.max is not None and value > self.max:
            raise ConfigError(f"{key} must be <= {self.max}, got {value!r}")
        if self.check is not None and (problem := self.check(value)):
            raise ConfigError(f"{key} {problem}")


def _kind_name(kinds) -> str:
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string", list: "a list",
             dict: "a mapping"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _models_check(value: str) -> str | None:
    from distillery.models import available_models

    models = available_models()
    return None if value in models else f"= {value!r} is not a known model{_nearest(value, models)}"


def _task_loss_check(value: str) -> str | None:
    from distillery.losses.task import TASK_LOSSES

    return None if value in TASK_LOSSES else f"= {value!r} is not a task loss{_nearest(value, TASK_LOSSES)}"


NUM, POS_NUM, NONNEG = Field(float), Field(float, positive=True), Field(float, min=0)
POS_INT, NONNEG_INT = Field(int, min=1), Field(int, min=0)
MODEL = Field(str, check=_models_check)
PROB = Field(float, min=0.0, max=1.0)
MINING = Field(str, choices=("batch_hard", "batch_soft"))

VIEW_SCHEMA = {"model": MODEL, "pretrained": Field(bool), "embedding_dim": POS_INT, "resolution": Field(int, min=8),
               "padding": NONNEG_INT, "erase_prob": PROB, "model_options": Field(dict, nullable=True)}
RECIPE_SCHEMA = {"epochs": POS_INT, "lr": POS_NUM, "warmup_epochs": NONNEG_INT, "cosine_start": NONNEG_INT,
                 "weight_decay": NONNEG, "momentum": Field(float, min=0.0, max=1.0),
                 "ids_per_batch": Field(int, min=2), "samples_per_id": POS_INT, "label_smoothing": PROB,
                 "triplet_margin": Field(float, min=0.0, nullable=True), "triplet_mining": MINING,
                 # optional (missing or null = the D3still default: ce_triplet, identity, sgd, = weight_decay)
                 "task_loss": Field(str, check=_task_loss_check, nullable=True),
                 "sampler": Field(str, choices=("identity", "class_balanced"), nullable=True),
                 "optimizer": Field(str, choices=("sgd", "adam"), nullable=True),
                 "extra_weight_decay": Field(float, min=0.0, nullable=True)}
CLS_RECIPE_SCHEMA = {"epochs": POS_INT, "lr": POS_NUM,
                     "lr_decay_epochs": Field(list, check=lambda v: None if all(isinstance(e, int) and not
                                              isinstance(e, bool) and e >= 0 for e in v) else
                                              f"must be a list of epoch numbers, got {v!r}"),
                     "lr_decay_rate": Field(float, positive=True, max=1.0), "weight_decay": NONNEG,
                     "momentum": Field(float, min=0.0, max=1.0), "batch_size": Field(int, min=2),
                     "grad_clip": Field(float, positive=True, nullable=True)}
TEACHER_SCHEMA = {**VIEW_SCHEMA, **RECIPE_SCHEMA,
                  "seed": Field(int, min=0, nullable=True),        # default: the global seed
                  "checkpoint": Field(str, nullable=True)}         # import instead of training (see steps.train_teacher)
DATASET_SCHEMA = {
    "reader": Field(str), "root": Field(str), "task": Field(str, choices=("retrieval", "classification")),
    "reader_options": Field(dict), "channels": Field(int, choices=(1, 3)), "store_size": Field(int, min=8, nullable=True),
    "max_train_per_class": Field(int, min=1, nullable=True), "max_test_per_class": Field(int, min=1, nullable=True),
    "on_bad_image": Field(str, choices=("fail", "skip")), "mean": Field(list), "std": Field(list),
    "paper_setting": Field(str, nullable=True),
    "crop_queries": Field(bool, nullable=True),   # crop query images to their bbox at prepare time (default true)
    "train_from": Field(dict, nullable=True),     # {reader, root, reader_options}: the train split of another set
    # video datasets (SVD, whiten_mtd): training views, test view and video similarity
    "augment": Field(str, choices=("pad_crop", "ssl_pair"), nullable=True),                  # default pad_crop
    "test_view": Field(str, choices=("resize", "center_crop", "center_crop_raw"), nullable=True),  # default resize
    "video_similarity": Field(str, choices=("chamfer", "mean", "max"), nullable=True),      # default chamfer
}
TRAIN_FROM_SCHEMA = {"reader": Field(str), "root": Field(str), "reader_options": Field(dict, nullable=True)}
SCHEMA: dict[str, Any] = {
    "dataset": Field(str), "method": Field(str), "seed": NONNEG_INT, "deterministic": Field(bool),
    "data": "datasets", "methods": "methods", "teachers": "teachers",
    "teacher": TEACHER_SCHEMA,
    "student": VIEW_SCHEMA,
    "training": {**{k: v for k, v in RECIPE_SCHEMA.items()}, "kd_batch_size": Field(int, min=2),
                 "ce_weight": NONNEG, "triplet_weight": NONNEG, "grad_clip": Field(float, positive=True, nullable=True),
                 "device": Field(str, choices=("auto", "cpu", "cuda")), "threads": POS_INT,
                 "amp": Field(str, choices=("none", "bf16", "fp16")), "channels_last": Field(bool),
                 "compile": Field(bool)},
    "evaluation": {"ks": Field(list), "batch_size": POS_INT, "whitening": Field(bool),
                   "nmi": Field(bool, nullable=True),
                   "scales": Field(list, nullable=True)},  # multi-scale test embeddings; null = [1.0]
    "whitening": {"out_dim": Field(int, min=1, nullable=True), "floor_ratio": Field(float, min=0.0),
                  "power": Field(float, min=0.0)},
    "benchmark": {"datasets": Field(list), "methods": Field(list),
                  "teachers": Field(list, nullable=True),                # extra teachers trained per dataset
                  "multi_teacher_methods": Field(list, nullable=True)},  # rows of stage bench_mt
    "teacher_cache": {"views": NONNEG_INT, "dtype": Field(str, choices=("float32", "float16")),
                      "logits_topk": Field(int, min=1, nullable=True)},
    # classification task (mdistiller recipe): its own networks, recipes and benchmark matrix
    "teacher_cls": {**VIEW_SCHEMA, **CLS_RECIPE_SCHEMA, "epochs": NONNEG_INT},  # 0: keep pretrained weights
    "student_cls": VIEW_SCHEMA,
    "training_cls": CLS_RECIPE_SCHEMA,
    "benchmark_cls": {"datasets": Field(list), "methods": Field(list)},
}
REQUIRED_TOP = ("dataset", "method", "seed", "data", "teacher", "student", "training", "evaluation", "methods",
                "benchmark", "teacher_cls", "student_cls", "training_cls", "benchmark_cls")
TASK_OVERRIDE = "classification"  # methods.<name>.classification: hyper-parameters that differ in that task
METHOD_RESERVED = ("method", "student")
"""Keys of a ``methods.<name>`` group read by the pipeline, not passed to the distiller: ``method`` = the
registered method to build (default: the group's name; lets one method fill several benchmark rows, e.g. an
ablation), ``student`` = overrides of the ``student`` group for this method's student (retrieval)."""


def _check_group(prefix: str, group: Any, schema: dict) -> None:
    if not isinstance(group, dict):
        raise ConfigError(f"{prefix} must be a mapping of {', '.join(schema)}")
    for key, value in group.items():
        if key not in schema:
            raise ConfigError(f"unknown parameter {prefix}.{key}{_nearest(key, schema)}")
        spec = schema[key]
        if isinstance(spec, dict):
            _check_group(f"{prefix}.{key}", value, spec)
        else:
            spec.validate(f"{prefix}.{key}", value)
    missing = [k for k in schema if k not in group and not (isinstance(schema[k], Field) and schema[k].nullable)]
    if missing:
        raise ConfigError(f"{prefix} is missing {', '.join(missing)}")


def _check_datasets(data: Any) -> None:
    from distillery.data import available_datasets

    if not isinstance(data, dict) or not data:
        raise ConfigError("data must map dataset names to their settings")
    readers = available_datasets()
    for name, entry in data.items():
        _check_group(f"data.{name}", entry, DATASET_SCHEMA)
        if entry["reader"] not in readers:
            raise ConfigError(f"data.{name}.reader = {entry['reader']!r} is not a known dataset{_nearest(entry['reader'], readers)}")
        if entry.get("train_from") is not None:
            _check_group(f"data.{name}.train_from", entry["train_from"], TRAIN_FROM_SCHEMA)
            if entry["train_from"]["reader"] not in readers:
                raise ConfigError(f"data.{name}.train_from.reader = {entry['train_from']['reader']!r} is not a known "
                                  f"dataset{_nearest(entry['train_from']['reader'], readers)}")


def _check_teachers(teachers: Any) -> None:
    if not isinstance(teachers, dict):
        raise ConfigError("teachers must map extra teacher names to teacher groups (the keys of `teacher`)")
    for name, group in teachers.items():
        if name == "teacher" or not str(name).isidentifier():
            raise ConfigError(f"teachers.{name}: a teacher name must be an identifier other than 'teacher'")
        _check_group(f"teachers.{name}", group, TEACHER_SCHEMA)


def _check_methods(methods: Any) -> None:
    from distillery.losses.registry import available_methods, build_method, method_hyperparameters

    if not isinstance(methods, dict):
        raise ConfigError("methods must map method names to their hyper-parameters")
    registered = available_methods()
    for name, hyper in methods.items():
        hyper = dict(hyper or {})
        base = hyper.pop("method", name)
        if base not in registered:
            where = f"methods.{name}.method = {base!r}" if base != name else f"methods.{name}"
            raise ConfigError(f"{where}: unknown method{_nearest(base, registered)}")
        _check_student_override(name, hyper.pop("student", None))
        override = hyper.pop(TASK_OVERRIDE, None)
        if override is not None and not isinstance(override, dict):
            raise ConfigError(f"methods.{name}.{TASK_OVERRIDE} must be a mapping of hyper-parameters")
        _check_hyperparameters(f"methods.{name}", base, hyper, method_hyperparameters(base))
        _check_hyperparameters(f"methods.{name}.{TASK_OVERRIDE}", base, override or {}, method_hyperparameters(base))
        try:  # the constructor checks the rest (choices, lists such as s2sd's target_dims)
            build_method(base, **hyper)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"methods.{name}: {err}") from None


def _check_student_override(name: str, student: Any) -> None:
    if student is None:
        return
    if not isinstance(student, dict):
        raise ConfigError(f"methods.{name}.student must be a mapping of student keys to override")
    for key, value in student.items():
        if key not in VIEW_SCHEMA:
            raise ConfigError(f"unknown parameter methods.{name}.student.{key}{_nearest(key, VIEW_SCHEMA)}")
        VIEW_SCHEMA[key].validate(f"methods.{name}.student.{key}", value)


def _check_hyperparameters(prefix: str, name: str, hyper: dict, valid: dict) -> None:
    for key, value in hyper.items():
        if key not in valid:
            raise ConfigError(f"unknown parameter {prefix}.{key}{_nearest(key, valid)}")
        default = valid[key]
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            Field(float if isinstance(default, float) else int).validate(f"{prefix}.{key}", value)
            if key in ("kd_weight", "ce_weight") and value < 0:
                raise ConfigError(f"{prefix}.{key} must be >= 0, got {value!r}")
        elif isinstance(default, bool):
            Field(bool).validate(f"{prefix}.{key}", value)
        elif isinstance(default, (tuple, list)):
            Field(list).validate(f"{prefix}.{key}", value)
        elif isinstance(default, str):
            Field(str).validate(f"{prefix}.{key}", value)


def method_options(params: dict, method: str, task: str = "retrieval") -> dict:
    """Hyper-parameters of ``method`` for ``task``: ``methods.<method>`` without its ``classification`` entry,
    updated with that entry's values when ``task`` is classification (one group per method; the entry holds
    only what differs in the classification task, e.g. mdistiller's KD temperature and CE weight)."""
    group = {k: v for k, v in (params["methods"][method] or {}).items() if k not in METHOD_RESERVED}
    override = group.pop(TASK_OVERRIDE, None) or {}
    return {**group, **override} if task == "classification" else group


def method_class(params: dict, method: str) -> str:
    """The registered method a ``methods.<method>`` group builds (its ``method`` key, default its name)."""
    return (params["methods"][method] or {}).get("method", method)


def student_group(params: dict, method: str | None = None) -> dict:
    """The ``student`` group, with the overrides of ``methods.<method>.student`` if any."""
    overrides = ((params["methods"].get(method) or {}).get("student") or {}) if method else {}
    return {**params["student"], **overrides}


def teacher_group(params: dict, name: str = "teacher") -> dict:
    """Teacher group ``name``: ``teacher`` = the ``teacher`` group, any other name = ``teachers.<name>``."""
    if name == "teacher":
        return params["teacher"]
    extra = params.get("teachers") or {}
    if name not in extra:
        raise ConfigError(f"teacher {name!r} has no group under teachers{_nearest(name, list(extra) + ['teacher'])}")
    return extra[name]


def _is_multi_teacher(params: dict, name: str) -> bool:
    from distillery.losses.registry import METHODS

    return bool(getattr(METHODS.get(method_class(params, name)), "multi_teacher", False))


def _check_multi_teacher(params: dict) -> None:
    """Teacher names exist; the teachers of every multi-teacher method in use (benchmark rows, focus method)
    have stages; multi-teacher rows live in ``benchmark.multi_teacher_methods``."""
    bench = params["benchmark"]
    extra, trained = params.get("teachers") or {}, bench.get("teachers") or []
    for name in trained:
        if name not in extra:
            raise ConfigError(f"benchmark.teachers: {name!r} has no group under teachers{_nearest(name, extra)}")
    used = [*(bench.get("multi_teacher_methods") or []), params["method"]]
    for name in dict.fromkeys(used):
        if name not in params["methods"] or not _is_multi_teacher(params, name):
            continue
        for t in method_options(params, name).get("teachers", ("teacher",)):
            if t != "teacher" and t not in trained:
                raise ConfigError(f"methods.{name}.teachers: {t!r} is not trained; add it to teachers and "
                                  f"benchmark.teachers")
    for name in bench["methods"]:
        if _is_multi_teacher(params, name):
            raise ConfigError(f"benchmark.methods: {name!r} is a multi-teacher method; list it under "
                              f"benchmark.multi_teacher_methods (stage bench_mt)")
    for name in bench.get("multi_teacher_methods") or []:
        if name not in params["methods"]:
            raise ConfigError(f"method {name!r} has no group under methods{_nearest(name, params['methods'])}")
        if not _is_multi_teacher(params, name):
            raise ConfigError(f"benchmark.multi_teacher_methods: {name!r} is a single-teacher method; list it "
                              f"under benchmark.methods")


def task_of(params: dict, dataset: str) -> str:
    """``retrieval`` or ``classification`` (``data.<dataset>.task``)."""
    return params["data"][dataset]["task"]


def validate(params: dict) -> dict:
    """Check a parsed params dict; returns it unchanged or raises ConfigError (one line)."""
    if not isinstance(params, dict):
        raise ConfigError("params.yaml must be a mapping")
    for key in params:
        if key not in SCHEMA:
            raise ConfigError(f"unknown parameter {key}{_nearest(key, SCHEMA)}")
    for key in REQUIRED_TOP:
        if key not in params:
            raise ConfigError(f"params.yaml is missing the top-level key {key!r}")
    for key, spec in SCHEMA.items():
        if key not in params:
            continue
        if spec == "datasets":
            _check_datasets(params[key])
        elif spec == "methods":
            _check_methods(params[key])
        elif spec == "teachers":
            _check_teachers(params[key])
        elif isinstance(spec, dict):
            _check_group(key, params[key], spec)
        else:
            spec.validate(key, params[key])
    bench, bench_cls = params["benchmark"], params["benchmark_cls"]
    for name in bench["datasets"] + bench_cls["datasets"] + [params["dataset"]]:
        if name not in params["data"]:
            raise ConfigError(f"dataset {name!r} has no entry under data{_nearest(name, params['data'])}")
    for group, task in (("benchmark", "retrieval"), ("benchmark_cls", "classification")):
        for name in params[group]["datasets"]:
            if task_of(params, name) != task:
                other = "benchmark_cls" if group == "benchmark" else "benchmark"
                raise ConfigError(f"{group}.datasets lists {name!r} whose data.{name}.task is not {task}; "
                                  f"move it to {other}.datasets")
    for name in bench["methods"] + bench_cls["methods"] + [params["method"]]:
        if name not in params["methods"]:
            raise ConfigError(f"method {name!r} has no group under methods{_nearest(name, params['methods'])}")
    used = set(bench["methods"]) | set(bench.get("multi_teacher_methods") or []) | {params["method"]}
    for name, hyper in params["methods"].items():
        if name not in used:  # only the retrieval methods this configuration runs rank within KD batches
            continue
        for key in ("topk", "top_k"):
            value = (hyper or {}).get(key)
            if value is not None and value > params["training"]["kd_batch_size"]:
                raise ConfigError(f"methods.{name}.{key} = {value} exceeds training.kd_batch_size = "
                                  f"{params['training']['kd_batch_size']}; lower it (the ranking is taken in-batch)")
    _check_multi_teacher(params)
    if params["dataset"] not in bench["datasets"] + bench_cls["datasets"]:
        group = "benchmark_cls" if task_of(params, params["dataset"]) == "classification" else "benchmark"
        raise ConfigError(f"dataset {params['dataset']!r} is not in benchmark.datasets or benchmark_cls.datasets; add "
                          f"it (e.g. -S '{group}.datasets=[{params['dataset']}]') so its teacher stages exist")
    return params


def load_params(path="params.yaml") -> dict:
    """Read and validate a params file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"parameter file {path} not found; run from the repository root or pass --params")
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    return validate(params)
