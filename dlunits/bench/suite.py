"""Benchmark suites: YAML files (configs/bench/*.yaml) loaded and checked, every error naming the
file and the line, e.g. "configs/bench/x.yaml line 12: unknown unit 'conv3d' (known: conv2d)".

The schema (also documented at the top of each suite file):

    tolerance:        {dtype: max relative error}, merged over DEFAULT_TOLERANCE
    min_run_time:     seconds, or {device: seconds}: the least time spent timing one call
    max_run_time:     seconds, or {device: seconds}: the most, unless the spread settles first
    cudnn_benchmark:  torch.backends.cudnn.benchmark for torch's side (default false)
    defaults:         devices, dtypes and passes for cases that do not set them
    cases:            a list of
        unit:     a name of dlunits.bench.units.UNITS
        name:     unique; --filter matches a part of it
        shape:    {parameter: int or {device: int}}: the unit's shape parameters
        devices:  [cpu, cuda]
        dtypes:   [dtype, ...] or {device: [dtype, ...]}
        passes:   [forward, forward+backward]

Any value written as {cpu: ..., cuda: ...} is per device; a plain value holds for every device.
"""
import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import yaml

from .units import ALL_DTYPES, UNITS, Unit

DEVICES = ("cpu", "cuda")
PASSES = ("forward", "forward+backward")
DEFAULT_TOLERANCE = {"float64": 1e-10, "float32": 1e-4, "float16": 2e-2, "bfloat16": 2e-2}
DEFAULT_RUN_TIME = {"min_run_time": {"cpu": 0.2, "cuda": 0.1}, "max_run_time": {"cpu": 1.0, "cuda": 0.5}}
CASE_DEFAULTS = {"devices": list(DEVICES), "dtypes": ["float32"], "passes": list(PASSES)}
TOP_LEVEL_KEYS = ("tolerance", "min_run_time", "max_run_time", "cudnn_benchmark", "defaults", "cases")
CASE_KEYS = ("unit", "name", "shape", "devices", "dtypes", "passes")


class SuiteError(ValueError):
    """A suite file that breaks the schema; the message starts with '<file> line <n>:'."""


@dataclasses.dataclass(frozen=True)
class Case:
    """One case of a suite, resolved per device: its full shape (defaults filled in) and dtypes."""

    unit: str
    name: str
    line: int
    shapes: Mapping[str, Mapping[str, int]]
    dtypes: Mapping[str, Tuple[str, ...]]
    passes: Tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Suite:
    path: str
    cases: Tuple[Case, ...]
    tolerance: Mapping[str, float]
    min_run_time: Mapping[str, float]
    max_run_time: Mapping[str, float]
    cudnn_benchmark: bool


@dataclasses.dataclass(frozen=True)
class Job:
    """A case on one device in one dtype; it gives one result row per pass."""

    case: Case
    device: str
    dtype: str

    @property
    def shape(self) -> Mapping[str, int]:
        return self.case.shapes[self.device]


# --- YAML with line numbers --------------------------------------------------------------------------


class _Mapping(dict):
    """A YAML mapping that knows its line and the line of each key."""

    def __init__(self, line: int):
        super().__init__()
        self.line = line
        self.lines: Dict[Any, int] = {}

    def line_of(self, key) -> int:
        return self.lines.get(key, self.line)


class _Sequence(list):
    """A YAML sequence that knows its line and the line of each item."""

    def __init__(self, line: int):
        super().__init__()
        self.line = line
        self.lines: List[int] = []


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings and sequences remember the lines they came from (1-based)."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _Mapping:
    loader.flatten_mapping(node)
    mapping = _Mapping(node.start_mark.line + 1)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{key}'", key_node.start_mark)
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.lines[key] = key_node.start_mark.line + 1
    return mapping


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> _Sequence:
    sequence = _Sequence(node.start_mark.line + 1)
    for item in node.value:
        sequence.append(loader.construct_object(item, deep=True))
        sequence.lines.append(item.start_mark.line + 1)
    return sequence


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_sequence)


# --- checks -------------------------------------------------------------------------------------------


class _Checker:
    """Validation helpers that raise SuiteError naming the file and a line."""

    def __init__(self, path: str):
        self.path = path

    def fail(self, line: int, message: str):
        raise SuiteError(f"{self.path} line {line}: {message}")

    def mapping(self, value, line: int, what: str) -> _Mapping:
        if not isinstance(value, _Mapping):
            self.fail(line, f"{what} must be a mapping (key: value), got {value!r}")
        return value

    def known_keys(self, mapping: _Mapping, known: Sequence[str], what: str):
        for key in mapping:
            if key not in known:
                self.fail(mapping.line_of(key), f"unknown key '{key}' in {what} (known: {', '.join(known)})")

    def names(self, value, line: int, known: Sequence[str], what: str) -> List[str]:
        """A name or a list of names, each one of known; what is the singular, e.g. 'dtype'."""
        items = value if isinstance(value, list) else [value]
        lines = value.lines if isinstance(value, _Sequence) else [line] * len(items)
        if not items:
            self.fail(line, f"the {what} list is empty")
        for item, item_line in zip(items, lines):
            if item not in known:
                self.fail(item_line, f"unknown {what} '{item}' (known: {', '.join(known)})")
        return list(dict.fromkeys(items))

    def per_device(self, value, line: int, devices: Sequence[str], what: str) -> Dict[str, Tuple[Any, int]]:
        """{device: (value, line)} from a plain value or a {device: value} mapping covering devices."""
        if not isinstance(value, _Mapping):
            return {device: (value, line) for device in devices}
        self.known_keys(value, DEVICES, what)
        for device in devices:
            if device not in value:
                self.fail(line, f"{what} has no value for {device}")
        return {device: (value[device], value.line_of(device)) for device in devices}

    def integer(self, value, line: int, minimum: int, what: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(line, f"{what} must be an integer >= {minimum}, got {value!r}")
        return value

    def positive_number(self, value, line: int, what: str) -> float:
        """A number > 0; a numeric string counts (YAML 1.1 reads 1e-4, without a dot, as text)."""
        try:
            number = float(value) if isinstance(value, (int, float, str)) and not isinstance(value, bool) else None
        except ValueError:
            number = None
        if number is None or not number > 0:
            self.fail(line, f"{what} must be a positive number, got {value!r}")
        return number


# --- the suite ----------------------------------------------------------------------------------------


def _shapes(check: _Checker, unit: Unit, shape: _Mapping, line: int, devices: Sequence[str], name: str) -> dict:
    """{device: full shape}: every parameter an integer in range, defaults filled in, possible; line is
    the line of the case's shape key."""
    for key in shape:
        if key not in unit.params:
            check.fail(shape.line_of(key), f"{unit.name} has no shape parameter '{key}' "
                                           f"(parameters: {', '.join(unit.params)})")
    missing = [p for p, spec in unit.params.items() if spec.default is None and p not in shape]
    if missing:
        required = [p for p, spec in unit.params.items() if spec.default is None]
        check.fail(line, f"case '{name}': shape lacks {', '.join(missing)} "
                               f"({unit.name} needs {', '.join(required)})")
    shapes = {device: {} for device in devices}
    for param, spec in unit.params.items():
        if param not in shape:
            for device in devices:
                shapes[device][param] = spec.default
            continue
        values = check.per_device(shape[param], shape.line_of(param), devices, f"shape parameter '{param}'")
        for device, (value, value_line) in values.items():
            shapes[device][param] = check.integer(value, value_line, spec.minimum, f"shape parameter '{param}'")
    for device in devices:
        problem = unit.check_shape(shapes[device])
        if problem:
            check.fail(line, f"case '{name}' on {device}: {problem}")
    return shapes


def _case(check: _Checker, entry, line: int, defaults: _Mapping) -> Case:
    entry = check.mapping(entry, line, "a case")
    check.known_keys(entry, CASE_KEYS, "a case")
    for key in ("unit", "name", "shape"):
        if key not in entry:
            check.fail(entry.line, f"a case needs '{key}'")
    unit_name = entry["unit"]
    if unit_name not in UNITS:
        check.fail(entry.line_of("unit"), f"unknown unit '{unit_name}' (known: {', '.join(UNITS)})")
    unit, name = UNITS[unit_name], str(entry["name"])

    def field(key):
        """(value, line) of a case key: the case's own, else the suite's defaults, else CASE_DEFAULTS."""
        source = entry if key in entry else defaults
        return (source[key], source.line_of(key)) if key in source else (CASE_DEFAULTS[key], entry.line)

    devices = check.names(*field("devices"), DEVICES, "device")
    passes = check.names(*field("passes"), PASSES, "pass")
    dtypes = {}
    for device, (value, dtype_line) in check.per_device(*field("dtypes"), devices, "dtypes").items():
        dtypes[device] = tuple(check.names(value, dtype_line, ALL_DTYPES, "dtype"))
        for dtype in dtypes[device]:
            if dtype not in unit.dtypes[device]:
                check.fail(dtype_line, f"{unit.name} has no {dtype} kernel on {device} "
                                       f"({device}: {', '.join(unit.dtypes[device])})")
    shape_line = entry.line_of("shape")
    shape = check.mapping(entry["shape"], shape_line, "shape")
    return Case(unit=unit.name, name=name, line=entry.line,
                shapes=_shapes(check, unit, shape, shape_line, devices, name), dtypes=dtypes, passes=tuple(passes))


def _run_time(check: _Checker, document: _Mapping, key: str) -> Dict[str, float]:
    """{device: seconds} from the suite's key, DEFAULT_RUN_TIME for the devices it leaves out."""
    values = dict(DEFAULT_RUN_TIME[key])
    if key in document:
        value = document[key]
        given = [d for d in DEVICES if d in value] if isinstance(value, _Mapping) else DEVICES
        for device, (seconds, line) in check.per_device(value, document.line_of(key), given, key).items():
            values[device] = check.positive_number(seconds, line, f"{key} for {device}")
    return values


def _tolerance(check: _Checker, document: _Mapping) -> Dict[str, float]:
    tolerance = dict(DEFAULT_TOLERANCE)
    if "tolerance" in document:
        given = check.mapping(document["tolerance"], document.line_of("tolerance"), "tolerance")
        for dtype, value in given.items():
            if dtype not in ALL_DTYPES:
                check.fail(given.line_of(dtype), f"unknown dtype '{dtype}' (known: {', '.join(ALL_DTYPES)})")
            tolerance[dtype] = check.positive_number(value, given.line_of(dtype), f"tolerance for {dtype}")
    return tolerance


def _parse(path: str, text: str):
    try:
        return yaml.load(text, Loader=_LineLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark else 1
        raise SuiteError(f"{path} line {line}: invalid YAML: {error.problem or error.context}") from None


def parse_suite(path: str, text: str) -> Suite:
    """The suite that text (the content of the file at path) describes; SuiteError if it breaks the schema."""
    check = _Checker(path)
    document = check.mapping(_parse(path, text), 1, "a suite file")
    check.known_keys(document, TOP_LEVEL_KEYS, "the suite")
    defaults = check.mapping(document.get("defaults", _Mapping(1)), document.line_of("defaults"), "defaults")
    check.known_keys(defaults, ("devices", "dtypes", "passes"), "defaults")
    entries = document.get("cases")
    if not isinstance(entries, _Sequence) or not entries:
        check.fail(document.line_of("cases"), "'cases' must be a non-empty list")
    cases, seen = [], {}
    for entry, line in zip(entries, entries.lines):
        case = _case(check, entry, line, defaults)
        if case.name in seen:
            check.fail(case.line, f"case name '{case.name}' is used already (line {seen[case.name]})")
        seen[case.name] = case.line
        cases.append(case)
    benchmark = document.get("cudnn_benchmark", False)
    if not isinstance(benchmark, bool):
        check.fail(document.line_of("cudnn_benchmark"), f"cudnn_benchmark must be true or false, got {benchmark!r}")
    return Suite(path=path, cases=tuple(cases), tolerance=_tolerance(check, document),
                 min_run_time=_run_time(check, document, "min_run_time"),
                 max_run_time=_run_time(check, document, "max_run_time"), cudnn_benchmark=benchmark)


def load_suite(path: str) -> Suite:
    """The suite in the YAML file at path; SuiteError (naming the file and line) if it is not valid."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as error:
        raise SuiteError(f"{path}: cannot read the suite ({error.strerror})") from None
    return parse_suite(path, text)


def select_jobs(suite: Suite, devices: Sequence[str], units: Optional[Sequence[str]] = None,
                dtypes: Optional[Sequence[str]] = None, name_filter: Optional[str] = None) -> List[Job]:
    """The suite's (case, device, dtype) jobs on these devices, kept to the given units, dtypes and names."""
    return [Job(case, device, dtype)
            for case in suite.cases
            if (units is None or case.unit in units) and (name_filter is None or name_filter in case.name)
            for device in devices if device in case.shapes
            for dtype in case.dtypes[device] if dtypes is None or dtype in dtypes]
