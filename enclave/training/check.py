"""Check a job against a sealed dataset's header, before any key is used.

Everything checked here is public: the job spec, the model presets, and the
header's encryption context and Arrow schema (bound to the data key through the
context's schema_sha256). The same pure function serves the enclave, which runs
it before asking KMS for the data key (`enclave.training.plan.plan_run`), and the
host's offline `hermetic job check`, so a job that cannot run on the data never
costs a key use.

What the trainer really requires of the data (`enclave.training.trainer.table_arrays`,
`enclave.training.models.preprocess`):

- the feature column is fixed_size_list<uint8>, and a per-record shape in the field
  metadata holds as many values as the list. A preset takes exactly its registered
  input (784 values for every preset: the mlp reads them flat, the image models as
  1x28x28), and a declared shape must be that image (28x28 or 1x28x28: size-1
  dimensions aside) or flat (784), never another arrangement of the same count;
- an inline model must take the input the column gives it (`jobmodel.inline_input`:
  the record flat, an H x W image as [1, H, W], H x W x C as [C, H, W]) and give one
  logit per declared class, within the model format's size limits: `plan_model` infers
  every layer's shape from these alone, and each way the model does not fit is one
  problem under `model`. A model reading token ids directly needs an embedding of at
  least 256 rows, as uint8 values reach 255;
- the label column is a scalar integer column whose type can hold every class
  index of the model (0..num_classes-1), and it declares (field metadata
  `hermetic.num_classes`, written by the sealer, which refused any label outside
  [0, K)) a class count: a preset's (10), or for an inline model the count it is
  built for. The label values stay private; their
  range is public by the owner's declaration;
- the dataset is one the spec's data.train names, if it names any;
- the spec's checkpoint key is one the data owner allowed to receive the model (the
  context's model_owner_keys), every owner's when there are several: the parent writes
  the spec, so it could otherwise name a key of its own and read the model;
- a job on several datasets (the union of several owners' data) finds the same
  feature and label fields in each (type, shape and declared class count): the
  trainer stacks their records into one table;
- the run the spec plans fits the dataset's budget, every dataset's when there are
  several (`enclave.training.budget`);
- a tabular job (data.features a list) or a regression job is read through the public
  schema (`enclave.sealed.public_schema`, `enclave.training.tabular`): every listed
  column exists and is numeric or categorical (categorical only with ids), every
  numeric value read (features, a regression target) has public bounds, from the
  schema or `[data.scale]`; the label is a class label for classification and a
  regression target for regression; the model is inline and plans for the assembled
  input ([width] floats, or [columns] ids under an embedding of enough rows) and gives
  one output per class, or one for regression;
- a sequence job (data.features names one sequence column) is read the same way: its
  input is [max_len] token ids, which the model reads with an embedding of at least
  the column's vocab_size rows, and a padding_mask that reads them pads with the
  column's pad id.

Every problem is collected, each naming what is wrong; none stops the others.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from enclave.errors import SealedDataError
from enclave.sealed.format import PAYLOAD, SealedHeader
from enclave.sealed.public_schema import (
    CategoricalColumn,
    ClassLabel,
    NumericColumn,
    PublicSchema,
    RegressionTarget,
    parse_schema,
)
from enclave.sealed.records import NUM_CLASSES_METADATA_KEY, field_num_classes, field_shape, header_schema
from enclave.training.budget import PlannedRun, plan_budget
from enclave.training.jobmodel import inline_input
from enclave.training.modelfmt.errors import ModelFormatError
from enclave.training.modelfmt.ops import OPS
from enclave.training.modelfmt.plan import plan_model
from enclave.training.modelfmt.presets import UnknownPreset
from enclave.training.modelfmt.spec import MODEL_INPUT, ModelFormat
from enclave.training.models import MODELS, ModelSpec
from enclave.training.spec import JobSpec
from enclave.training.tabular import (
    Categorical,
    Numeric,
    TabularLayout,
    Tokens,
    bounds_of,
    input_layout,
    job_target,
    sequence_feature,
)

#: The wire code a problem is reported under when the enclave refuses the job.
CONFIG = "config"
BUDGET = "budget"

# The schema comes from the header: what of it goes into a message is bounded.
_MAX_NAMES_SHOWN = 8
_MAX_SHOWN = 80


@dataclass(frozen=True)
class Problem:
    """One reason the job cannot run on the dataset: where (a spec key or column) and what."""

    where: str
    message: str
    code: str = CONFIG

    def to_json(self) -> dict[str, str]:
        return {"where": self.where, "message": self.message}


@dataclass(frozen=True)
class JobReview:
    """Every problem found, and the run the spec plans on the dataset when it can be computed."""

    problems: tuple[Problem, ...]
    planned: PlannedRun | None

    @property
    def ok(self) -> bool:
        return not self.problems


def check_job(spec: JobSpec, headers: SealedHeader | Sequence[SealedHeader]) -> list[Problem]:
    """Every problem that keeps `spec` from running on the dataset(s) the headers describe."""
    return list(review_job(spec, headers).problems)


def review_job(spec: JobSpec, headers: SealedHeader | Sequence[SealedHeader]) -> JobReview:
    """`check_job` with the planned run (None if a header is no dataset or q cannot be formed)."""
    datasets = (headers,) if isinstance(headers, SealedHeader) else tuple(headers)
    review = review_datasets(spec, datasets)
    return JobReview((*check_spec(spec), *review.problems), review.planned)


def check_spec(spec: JobSpec) -> list[Problem]:
    """The problems of the spec alone, whatever the data: a named model must be a preset."""
    try:
        _ = spec.model_format
    except UnknownPreset as err:
        return [Problem("model.name", str(err))]
    return []


def review_dataset(spec: JobSpec, header: SealedHeader) -> JobReview:
    """The problems that depend on the dataset (`check_job` less `check_spec`), and the plan."""
    return review_datasets(spec, (header,))


def review_datasets(spec: JobSpec, headers: Sequence[SealedHeader], names: Sequence[str] | None = None) -> JobReview:
    """`review_dataset` for a job on the union of these datasets; one plan over all of them.

    A problem of one dataset is named by `names` (default: the dataset ids when there
    are several) in front of the spec key or column.
    """
    if names is None:
        names = [h.dataset_id for h in headers] if len(headers) > 1 else [""]*len(headers)
    problems: list[Problem] = []
    datasets: list[SealedHeader] = []
    for name, header in zip(names, headers, strict=True):
        found = _dataset_problems(spec, header)
        problems += [Problem(f"{name}: {p.where}" if name else p.where, p.message, p.code) for p in found]
        if header.payload == PAYLOAD:
            datasets.append(header)
    if len(datasets) != len(headers):
        return JobReview(tuple(problems), None)
    problems += _schema_mismatches(spec, headers, names)
    budget = plan_budget(spec, datasets)
    # One dataset's breaches go under its name; over several, each message names its dataset.
    prefix = f"{names[0]}: " if len(names) == 1 and names[0] else ""
    problems += [Problem(prefix + where, message, BUDGET) for where, message in budget.breaches]
    return JobReview(tuple(problems), budget.planned)


def _dataset_problems(spec: JobSpec, header: SealedHeader) -> list[Problem]:
    if header.payload != PAYLOAD:
        return [Problem("sealed file", f"holds a {header.payload!r} payload, not a dataset")]
    problems: list[Problem] = []
    train = spec.data.train
    if train and header.dataset_id not in train:
        named = f"dataset {train[0]!r}" if len(train) == 1 else "datasets " + ", ".join(repr(t) for t in train)
        problems.append(Problem("data.train", f"names {named}, the sealed file is {header.dataset_id!r}"))
    allowed = header.model_owner_keys
    if spec.checkpoint.key_id not in allowed:
        shown = ", ".join(_short(repr(k)) for k in allowed[:_MAX_NAMES_SHOWN])
        problems.append(Problem("checkpoint.key_id", f"names KMS key {_short(repr(spec.checkpoint.key_id))}, which "
                                f"the data owner did not allow to receive the model (allowed: {shown})"))
    name = spec.model.name
    model = None if name is None else MODELS.get(name)
    who = "the inline model" if name is None else f"model {name!r}"
    try:
        schema = header_schema(header)
    except SealedDataError as err:
        problems.append(Problem("schema", str(err)))
    else:
        problems += _selection_problems(spec, schema, model)
        if spec.data.tabular or spec.task.regression or sequence_feature(spec, schema):
            problems += _public_problems(schema, spec)
            return problems
        features = _feature_problems(schema, spec.data.columns[0], who, model)
        label = _task_problems(schema, spec) or _label_problems(schema, spec.data.label, who, model)
        problems += features + label
        if spec.model.inline is not None and not features and not label:
            problems += _inline_problems(schema, spec, spec.model.inline)
    return problems


def _selection_problems(spec: JobSpec, schema: pa.Schema, model: ModelSpec | None) -> list[Problem]:
    """A search selecting on AUC, which is released for two classes only: no trial could be scored."""
    tuning = spec.tuning
    if tuning is None or not tuning.metric.startswith("auc/") or spec.task.regression:
        return []
    if model is not None:
        classes: int | None = model.num_classes
    else:
        index = schema.get_field_index(spec.data.label)
        try:
            classes = field_num_classes(schema.field(index)) if index >= 0 else None
        except SealedDataError:
            classes = None  # the label's own problem is reported with it
    if classes is None or classes == 2:
        return []
    return [Problem("tuning.select.metric", f"auc is released for two classes only, column "
                                            f"{_short(repr(spec.data.label))} has {classes}: "
                                            f"select on accuracy/{spec.eval.public}")]


def _public(schema: pa.Schema) -> tuple[PublicSchema | None, list[Problem]]:
    try:
        return parse_schema(schema), []
    except SealedDataError as err:
        return None, [Problem("schema", _short(err, 3 * _MAX_SHOWN))]


def _task_problems(schema: pa.Schema, spec: JobSpec) -> list[Problem]:
    """A classification job on a regression target: the task, not the type, is what is wrong."""
    public, _ = _public(schema)
    column = None if public is None else public.get(spec.data.label)
    if isinstance(column, RegressionTarget):
        return [Problem("data.label", f"column {_short(repr(column.name))} is {column.describe()}; the task is "
                                      'classification (the default): set [task] kind = "regression"')]
    return []


def _public_problems(schema: pa.Schema, spec: JobSpec) -> list[Problem]:
    """A tabular or regression job, read through the public schema (the columns, the label, the model)."""
    public, problems = _public(schema)
    if public is None:
        return problems
    sequence = sequence_feature(spec, schema)
    features: list[Problem] = []
    if spec.data.tabular:
        features = _tabular_problems(public, spec)
    elif not sequence:
        features = _feature_problems(schema, spec.data.columns[0], "the inline model", None)
    label = _target_problems(public, spec)
    problems = features + label
    if spec.model.inline is None:
        what = "a tabular" if spec.data.tabular else "a sequence" if sequence else "a regression"
        problems.append(Problem("model.name", f"preset {_short(repr(spec.model.name))} takes 28x28 images and "
                                              f"gives 10 classes; {what} job describes its model inline"))
    elif not problems:
        problems += _tabular_model_problems(schema, public, spec, spec.model.inline)
    return problems


def _tabular_problems(public: PublicSchema, spec: JobSpec) -> list[Problem]:
    """One problem per listed column that cannot be a feature as the spec encodes it."""
    where, data = "data.features", spec.data
    ids = data.encoding == "ids"
    problems: list[Problem] = []
    for name in data.columns:
        column = public.get(name)
        shown = _short(repr(name))
        if column is None:
            names = ", ".join(_short(repr(n)) for n in public.names[:_MAX_NAMES_SHOWN])
            more = f" and {len(public) - _MAX_NAMES_SHOWN} more" if len(public) > _MAX_NAMES_SHOWN else ""
            problems.append(Problem(where, f"column {shown} is not in the dataset (columns: {names or 'none'}{more})"))
        elif isinstance(column, NumericColumn):
            if ids:
                problems.append(Problem(where, f"column {shown} is {column.describe()}; data.categorical = \"ids\" "
                                               "takes categorical columns only (the model has one input)"))
                continue
            bounds = bounds_of(data, column)
            if bounds is None:
                problems.append(Problem(where, f"column {shown} is {column.describe()}: it is scaled by public "
                                               f"bounds, declare them at sealing (--numeric {_short(name)}:LO:HI) "
                                               f"or in the spec ([data.scale] {_short(name)} = "
                                               "{ lo = ..., hi = ... }); no statistic of the private data is used"))
            elif not bounds[0] < bounds[1]:
                problems.append(Problem(where, f"column {shown} is {column.describe()}: scaling needs lo below hi, "
                                               f"set [data.scale] {_short(name)} = {{ lo = ..., hi = ... }}"))
        elif not isinstance(column, CategoricalColumn):
            hint = ""
            if column.kind in ("tensor", "sequence"):
                hint = f" (one {column.kind} column is named alone: data.features = {shown})"
            problems.append(Problem(where, f"column {shown} is {_short(column.describe())}; a list of features "
                                           f"takes numeric and categorical columns{hint}"))
    for name, _ in data.scale:
        column = public.get(name)
        if column is not None and not isinstance(column, (NumericColumn, RegressionTarget)):
            problems.append(Problem(f"data.scale.{_short(name)}", f"column {_short(repr(name))} is "
                                    f"{_short(column.describe())}; scale constants apply to numeric columns"))
    return problems


def _target_problems(public: PublicSchema, spec: JobSpec) -> list[Problem]:
    """The label's kind against the task, and a regression target's bounds."""
    where, name = "data.label", spec.data.label
    column = public.get(name)
    shown = _short(repr(name))
    if column is None:
        names = ", ".join(_short(repr(n)) for n in public.names[:_MAX_NAMES_SHOWN])
        return [Problem(where, f"column {shown} is not in the dataset (columns: {names or 'none'})")]
    described = _short(column.describe())
    if spec.task.regression:
        if not isinstance(column, RegressionTarget):
            return [Problem(where, f"column {shown} is {described}; [task] kind = \"regression\" needs a regression "
                                   f"target (seal it with --target {_short(name)}:LO:HI)")]
        bounds = bounds_of(spec.data, column)
        if bounds is None:
            return [Problem(where, f"column {shown} is {described}: the loss clips the target to public bounds, "
                                   f"declare them at sealing (--target {_short(name)}:LO:HI) or in the spec "
                                   f"([data.scale] {_short(name)} = {{ lo = ..., hi = ... }})")]
        if not bounds[0] < bounds[1]:
            return [Problem(where, f"column {shown} is {described}: scaling needs lo below hi, "
                                   f"set [data.scale] {_short(name)} = {{ lo = ..., hi = ... }}")]
        return []
    if isinstance(column, RegressionTarget):
        return [Problem(where, f"column {shown} is {described}; the task is classification (the default): "
                               'set [task] kind = "regression"')]
    if not isinstance(column, ClassLabel):
        return [Problem(where, f"column {shown} is {described}; a classification job needs a class label "
                               "(seal it with --label COL and --classes A,B or --num-classes K)")]
    return []


def _layout_text(layout: TabularLayout) -> str:
    numeric = sum(isinstance(p, Numeric) for p in layout.parts)
    blocks = [f"{_short(repr(p.name))} {'ids' if p.ids else 'one-hot'} {p.size}"
              if isinstance(p, Categorical) else f"{_short(repr(p.name))} {p.length} token ids below {p.size}"
              for p in layout.parts if not isinstance(p, Numeric)]
    shown = ", ".join([f"{numeric} numeric"] * bool(numeric) + blocks[:_MAX_NAMES_SHOWN])
    more = f" and {len(blocks) - _MAX_NAMES_SHOWN} more" if len(blocks) > _MAX_NAMES_SHOWN else ""
    return f"{shown}{more}"


def _tabular_model_problems(schema: pa.Schema, public: PublicSchema, spec: JobSpec,
                            model: ModelFormat) -> list[Problem]:
    """Whether the inline model takes the assembled input and gives the task's outputs (columns checked)."""
    target = job_target(spec, public)
    outputs = "1 output (regression)" if target.regression else f"{target.outputs} classes"
    layout = input_layout(spec, public)
    if layout is not None:
        shape = layout.input_shape
        given = f"the features give input {list(shape)} ({_layout_text(layout)}), column " \
                f"{_short(repr(spec.data.label))} {outputs}"
    else:
        field = schema.field(spec.data.features)
        model_input = inline_input(int(field.type.list_size), field_shape(field), model)
        shape = model_input.shape
        given = f"column {_short(repr(spec.data.features))} gives input {list(shape)}, " \
                f"column {_short(repr(spec.data.label))} {outputs}"
    try:
        plan_model(model, input_shape=shape, num_outputs=target.outputs)
    except ModelFormatError as err:
        return [Problem("model", _short(f"{err} ({given})", 6 * _MAX_SHOWN))]
    if layout is None:
        return []
    reads_ids = [node for node in model.nodes if OPS[node.op].takes_ids and node.inputs[0] == MODEL_INPUT]
    tokens = next((p for p in layout.parts if isinstance(p, Tokens)), None)
    if layout.ids and not reads_ids:
        given = 'data.categorical = "ids" gives category ids' if tokens is None else \
            f"column {_short(repr(tokens.name))} gives token ids"
        return [Problem("model", f"{given}: the model must read them with an "
                                 f"embedding of at least {layout.vocab} rows ({_layout_text(layout)})")]
    if not layout.ids and reads_ids:
        return [Problem("model", f"{reads_ids[0].label} reads ids but the features are one-hot floats: set "
                                 'data.categorical = "ids" and list categorical columns only')]
    problems = []
    whose = f"the listed columns reach {layout.vocab - 1} ({_layout_text(layout)})" if tokens is None else \
        f"column {_short(repr(tokens.name))} reach {layout.vocab - 1}"
    for node in reads_ids:
        vocab, pad = node.arguments.get("vocab"), node.arguments.get("pad", 0)
        if node.op == "embedding" and isinstance(vocab, int) and vocab < layout.vocab:
            problems.append(Problem("model", f"{node.label}: vocab is {vocab} but the ids of {whose}"))
        if node.op == "padding_mask" and tokens is not None and pad != tokens.pad:
            problems.append(Problem("model", f"{node.label}: pad is {pad} but column {_short(repr(tokens.name))} "
                                             f"is padded with {tokens.pad}"))
    return problems


def _inline_problems(schema: pa.Schema, spec: JobSpec, model: ModelFormat) -> list[Problem]:
    """Whether the inline model takes the feature column and gives the label's classes (columns checked)."""
    assert isinstance(spec.data.features, str)  # a list of features is planned by _tabular_model_problems
    field, label = schema.field(spec.data.features), schema.field(spec.data.label)
    size, declared, classes = int(field.type.list_size), field_shape(field), field_num_classes(label)
    assert classes is not None  # _label_problems reported a missing count
    model_input = inline_input(size, declared, model)
    records = f"{_shape_text(declared)} records" if declared is not None else f"records of {size} values"
    given = (f"column {spec.data.features!r} gives {records} as input {list(model_input.shape)}, "
             f"column {spec.data.label!r} {classes} classes")
    try:
        plan_model(model, input_shape=model_input.shape, num_outputs=classes)
    except ModelFormatError as err:
        return [Problem("model", _short(f"{err} ({given})", 6 * _MAX_SHOWN))]
    problems = []
    for node in model.nodes:
        vocab = node.arguments.get("vocab")
        if node.op == "embedding" and node.inputs[0] == MODEL_INPUT and isinstance(vocab, int) and vocab < 256:
            problems.append(Problem("model", f"{node.label}: vocab is {vocab} but reads the uint8 values of "
                                             f"column {spec.data.features!r} directly, up to 255"))
    return problems


def _schema_mismatches(spec: JobSpec, headers: Sequence[SealedHeader], names: Sequence[str]) -> list[Problem]:
    """Each dataset whose feature or label field differs from the first dataset's (type or metadata)."""
    if len(headers) < 2:
        return []
    try:
        schemas = [header_schema(h) for h in headers]
    except SealedDataError:
        return []  # already reported for that dataset
    problems: list[Problem] = []
    first = names[0] or headers[0].dataset_id
    pairs = [*(("data.features", c) for c in spec.data.columns), ("data.label", spec.data.label)]
    for where, column in pairs:
        if any(s.names.count(column) != 1 for s in schemas):
            continue  # a missing column is already reported
        reference = schemas[0].field(column)
        for name, header, schema in zip(names[1:], headers[1:], schemas[1:], strict=True):
            field = schema.field(column)
            if not field.equals(reference, check_metadata=True):
                problems.append(Problem(f"{name or header.dataset_id}: {where}",
                                        f"column {column!r} is {_field_text(field)}, in {first} it is "
                                        f"{_field_text(reference)}: the datasets of one job share a schema"))
    return problems


def _field_text(field: pa.Field) -> str:
    try:
        shape, classes = field_shape(field), field_num_classes(field)
    except SealedDataError:
        shape, classes = None, None
    extra = "" if shape is None else f" shaped {_shape_text(shape)}"
    extra += "" if classes is None else f" with {classes} classes"
    meta = "" if shape is not None or classes is not None or not field.metadata else " with other metadata"
    return f"{_short(field.type)}{extra}{meta}"


def _column(schema: pa.Schema, name: str, where: str) -> tuple[pa.Field | None, list[Problem]]:
    count = schema.names.count(name)
    if count == 1:
        return schema.field(name), []
    if count == 0:
        shown = ", ".join(_short(repr(n)) for n in schema.names[:_MAX_NAMES_SHOWN])
        more = f" and {len(schema.names) - _MAX_NAMES_SHOWN} more" if len(schema.names) > _MAX_NAMES_SHOWN else ""
        return None, [Problem(where, f"column {name!r} is not in the dataset (columns: {shown or 'none'}{more})")]
    return None, [Problem(where, f"the dataset has {count} columns named {name!r}")]


def _short(text: object, limit: int = _MAX_SHOWN) -> str:
    """`text` cut to a bounded length (Arrow types and column names from the header)."""
    shown = str(text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _shape_text(shape: tuple[int, ...]) -> str:
    return _short("x".join(str(d) for d in shape))


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def _feature_problems(schema: pa.Schema, name: str, who: str, model: ModelSpec | None) -> list[Problem]:
    where = "data.features"
    field, problems = _column(schema, name, where)
    if field is None:
        return problems
    wanted = "fixed_size_list<uint8>" if model is None else f"fixed_size_list<uint8>[{model.input_features}]"
    kind = field.type
    if not pa.types.is_fixed_size_list(kind):
        return [Problem(where, f"column {name!r} is {_short(kind)}, {who} needs {wanted} pixels")]
    if kind.value_type != pa.uint8():
        problems.append(Problem(where, f"column {name!r} holds {_short(kind.value_type)} values, "
                                       f"{who} needs {wanted} pixels"))
    size = int(kind.list_size)
    if model is not None and size != model.input_features:
        image = f" ({_shape_text(model.input_shape)})" if len(model.input_shape) > 1 else ""
        problems.append(Problem(where, f"column {name!r} holds {size} values per record, {who} "
                                       f"takes {model.input_features}{image}"))
    try:
        shape = field_shape(field)
    except SealedDataError as err:
        return [*problems, Problem(where, _short(err, 3 * _MAX_SHOWN))]
    if shape is None:
        return problems
    if math.prod(shape) != size:
        problems.append(Problem(where, f"column {name!r} declares records shaped {_shape_text(shape)}, "
                                       f"which is not its {size} values"))
    elif (
        model is not None
        and size == model.input_features
        and len(_squeezed(model.input_shape)) > 1
        and len(_squeezed(shape)) > 1
        and _squeezed(shape) != _squeezed(model.input_shape)
    ):
        problems.append(Problem(where, f"column {name!r} holds records shaped {_shape_text(shape)}, "
                                       f"{who} takes images shaped {_shape_text(model.input_shape)}"))
    return problems


def _label_problems(schema: pa.Schema, name: str, who: str, model: ModelSpec | None) -> list[Problem]:
    where = "data.label"
    field, problems = _column(schema, name, where)
    if field is None:
        return problems
    classes = "class indices" if model is None else f"class indices 0..{model.num_classes - 1}"
    kind = field.type
    if not pa.types.is_integer(kind):
        return [Problem(where, f"column {name!r} is {_short(kind)}, the model needs integer {classes}")]
    largest = 2 ** (kind.bit_width - (1 if pa.types.is_signed_integer(kind) else 0)) - 1
    if model is not None and largest < model.num_classes - 1:
        return [Problem(where, f"column {name!r} is {kind}, which cannot hold {classes}")]
    try:
        declared = field_num_classes(field)
    except SealedDataError as err:
        return [Problem(where, _short(err, 3 * _MAX_SHOWN))]
    key = NUM_CLASSES_METADATA_KEY.decode()
    if declared is None:
        return [Problem(where, f"column {name!r} declares no class count ({key}): seal the data with --num-classes")]
    if model is not None and declared != model.num_classes:
        return [Problem(where, f"column {name!r} declares {declared} classes, {who} has "
                               f"{model.num_classes}")]
    return []
