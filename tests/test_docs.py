"""Documentation checks: docstrings of the public API, and README commands vs CI.

- every public class/function (``keras_loadtune.__all__``, ``keras_loadtune.engine``,
  ``keras_loadtune.report``, ``keras_loadtune.measurement``, ``keras_loadtune.decision``
  and its submodules) has a docstring;
- the classes and functions users call have an ``Example:`` section with code;
- their public methods and properties have docstrings;
- README.md's test command is exactly the one ``.ci/run`` runs, every extra the
  README installs exists in setup.cfg, and every ``LoadTuner`` argument is documented.
"""

from __future__ import annotations

import configparser
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CI_RUN = ROOT / ".ci" / "run"

# Modules whose public classes/functions must all be documented.
_DECISION = importlib.import_module("keras_loadtune.decision")
DOCUMENTED_MODULES = [
    "keras_loadtune.engine",
    "keras_loadtune.report",
    "keras_loadtune.measurement",
    "keras_loadtune.decision",
    *(
        f"keras_loadtune.decision.{m.name}"
        for m in pkgutil.iter_modules(_DECISION.__path__)
        if not m.name.startswith("_")
    ),
]

# Top-level names that import Keras (and so TensorFlow) when resolved.
KERAS_NAMES = {"LoadTuner", "TunedPyDataset", "wrap"}

# What users call: these need an "Example:" section, and documented public members.
USER_FACING = [
    ("keras_loadtune", "LoadTuner"),
    ("keras_loadtune", "TunedPyDataset"),
    ("keras_loadtune", "wrap"),
    ("keras_loadtune", "LoaderConfig"),
    ("keras_loadtune", "TuningReport"),
    ("keras_loadtune.engine", "Prefetcher"),
    ("keras_loadtune", "TrialRecord"),
]

# Public members known to lack a docstring (the code is fixed elsewhere; strict xfail
# turns into a failure as soon as they are documented, so this list cannot go stale).
UNDOCUMENTED_MEMBERS: dict[str, list[str]] = {}

EXAMPLE_RE = re.compile(r"^\s*Examples?:\s*\n(?:\s*\n)*\s*(```|>>>)", re.MULTILINE)


def _is_api(obj: object) -> bool:
    return inspect.isclass(obj) or inspect.isfunction(obj)


def _public_names(module_name: str) -> list[str]:
    """`__all__`, or else the classes/functions defined in the module without a leading `_`."""
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:
        names = [
            name
            for name, obj in vars(module).items()
            if not name.startswith("_") and _is_api(obj) and obj.__module__ == module_name
        ]
    # Constants (`__version__`, `DECISIONS`, `START_METHOD`, ...) cannot carry docstrings.
    return sorted(n for n in names if _is_api(getattr(module, n)))


def _params() -> list:
    import keras_loadtune

    params = []
    for name in sorted(keras_loadtune.__all__):
        if name in KERAS_NAMES:
            params.append(pytest.param("keras_loadtune", name, marks=pytest.mark.keras))
        elif _is_api(getattr(keras_loadtune, name)):
            params.append(pytest.param("keras_loadtune", name))
    for module_name in DOCUMENTED_MODULES:
        params.extend(pytest.param(module_name, n) for n in _public_names(module_name))
    return params


def _marks(name: str) -> list:
    return [pytest.mark.keras] if name in KERAS_NAMES else []


def _resolve(module_name: str, name: str) -> object:
    return getattr(importlib.import_module(module_name), name)


# ---------------------------------------------------------------------- docstrings


@pytest.mark.parametrize(("module_name", "name"), _params())
def test_public_api_has_docstring(module_name, name):
    obj = _resolve(module_name, name)
    doc = inspect.getdoc(obj)
    assert doc and doc.strip(), f"{module_name}.{name} has no docstring"
    assert len(doc.split()) >= 3, f"{module_name}.{name}: docstring too short: {doc!r}"


@pytest.mark.parametrize(
    ("module_name", "name"),
    [pytest.param(m, n, marks=_marks(n), id=n) for m, n in USER_FACING],
)
def test_user_facing_api_has_example(module_name, name):
    doc = inspect.getdoc(_resolve(module_name, name)) or ""
    assert EXAMPLE_RE.search(doc), (
        f"{module_name}.{name}: the docstring needs an 'Example:' section followed by a "
        "```python block (or >>> lines)"
    )


def _undocumented_members(cls: type) -> list[str]:
    """Public methods/properties defined on `cls` with no docstring on it or a base class."""
    missing = []
    for name, attr in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(attr, (staticmethod, classmethod)):
            attr = attr.__func__
        if not (inspect.isfunction(attr) or isinstance(attr, property)):
            continue
        documented = any(
            (getattr(vars(base).get(name), "__doc__", None) or "").strip()
            for base in cls.__mro__
            if name in vars(base)
        )
        if not documented:
            missing.append(name)
    return sorted(missing)


def _member_params() -> list:
    params = []
    for module_name, name in USER_FACING:
        marks = _marks(name)
        if name in UNDOCUMENTED_MEMBERS:
            reason = f"{name} members without docstring: {', '.join(UNDOCUMENTED_MEMBERS[name])}"
            marks = [*marks, pytest.mark.xfail(strict=True, reason=reason)]
        if name != "wrap":
            params.append(pytest.param(module_name, name, marks=marks, id=name))
    return params


@pytest.mark.parametrize(("module_name", "name"), _member_params())
def test_user_facing_members_have_docstrings(module_name, name):
    cls = _resolve(module_name, name)
    assert inspect.isclass(cls)
    assert _undocumented_members(cls) == [], f"{name}: public members without a docstring"


# -------------------------------------------------------------------------- README


def _ci_test_command() -> str:
    text = CI_RUN.read_text(encoding="utf-8")
    match = re.search(r"^# --- README.*?\n(.*?)\n# --- end README command ---", text, re.S | re.M)
    assert match, ".ci/run lost its '# --- README' / '# --- end README command ---' markers"
    lines = [ln.strip() for ln in match.group(1).splitlines() if ln.strip()]
    assert len(lines) == 1, f".ci/run: expected one command between the markers, got {lines}"
    return lines[0]


def _readme_commands() -> list[str]:
    """Every non-empty line of the README's ```bash blocks."""
    blocks = re.findall(
        r"^```(?:bash|sh|console)\n(.*?)^```", README.read_text("utf-8"), re.S | re.M
    )
    return [ln.strip() for block in blocks for ln in block.splitlines() if ln.strip()]


def _setup_block(lines: list[str], extra: str) -> str:
    found = [ln for ln in lines if f'-e ".[{extra}]"' in ln]
    assert len(found) == 1, f"README: expected one set-up command installing [{extra}]: {found}"
    return found[0]


def test_readme_test_command_is_exactly_what_ci_runs():
    assert _setup_block(_readme_commands(), "dev") == _ci_test_command()


def test_readme_demo_command_installs_tensorflow_and_runs_the_demo():
    command = _setup_block(_readme_commands(), "cpu")
    assert command == (
        'python3 -m venv .venv && .venv/bin/pip install -q -e ".[cpu]" '
        "&& .venv/bin/python -m keras_loadtune demo"
    )


def test_readme_extras_exist_in_setup_cfg():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg", encoding="utf-8")
    extras = set(cfg["options.extras_require"])
    text = README.read_text("utf-8")
    named = set(re.findall(r'\.\[(\w+)\]"', text)) | set(re.findall(r"`\[(\w+)\]`", text))
    assert named, "README names no extras"
    assert named <= extras, f"README names extras missing from setup.cfg: {named - extras}"
    cpu = cfg["options.extras_require"]["cpu"]
    assert "tensorflow-cpu" in cpu, "the demo command relies on [cpu] installing TensorFlow"


@pytest.mark.keras
def test_readme_documents_every_loadtuner_argument():
    import keras_loadtune as klt

    text = README.read_text("utf-8")
    params = [p for p in inspect.signature(klt.LoadTuner).parameters if p != "self"]
    missing = [p for p in params if f"| `{p}` |" not in text]
    assert not missing, f"README's knob table lacks LoadTuner arguments: {missing}"


def test_readme_documents_the_cli():
    from keras_loadtune import cli

    text = README.read_text("utf-8")
    parser = cli.build_parser()
    subcommands = parser._subparsers._group_actions[0].choices  # argparse has no public API
    demo_default = subcommands["demo"].get_default("loader")
    for loader in cli.DEMO_LOADERS:
        if loader != demo_default:
            assert f"keras-loadtune demo --loader {loader}" in text
    for flags in ("", " --study run1", " --study run1 --json"):
        assert f"keras-loadtune report --storage sqlite:///klt.db{flags}" in text


# ------------------------------------------------------------------------ doctests

# Modules whose docstring examples run as doctests (`>>>`); they import no Keras.
DOCTEST_MODULES = sorted(
    name
    for name in (
        m.name
        for m in pkgutil.walk_packages(
            importlib.import_module("keras_loadtune").__path__, prefix="keras_loadtune."
        )
    )
    if ".keras_adapter" not in name
    and not name.endswith(("__main__", ".demo", ".cli"))
    # Imported by the forkserver only: it makes its importer ignore SIGINT.
    and not name.endswith("._forkserver_init")
)
# Modules that must keep runnable examples (the decision layer, storage, the arithmetic).
MUST_HAVE_DOCTESTS = {
    "keras_loadtune._validate",
    "keras_loadtune.storage",
    "keras_loadtune.engine.arithmetic",
    "keras_loadtune.report._model",
    *(
        f"keras_loadtune.decision.{m.name}"
        for m in pkgutil.iter_modules(_DECISION.__path__)
        if m.name not in ("resources", "settings")
    ),
}


def _doctests(module_name: str) -> list:
    import doctest

    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    return [t for t in finder.find(module, module_name) if t.examples]


@pytest.mark.parametrize("module_name", DOCTEST_MODULES)
def test_docstring_examples_run(module_name, tmp_path, monkeypatch):
    import doctest

    monkeypatch.chdir(tmp_path)  # an example that writes a file writes it here
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    tests = _doctests(module_name)
    if module_name in MUST_HAVE_DOCTESTS:
        assert tests, f"{module_name}: its docstring examples should be runnable (>>> lines)"
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    runner = doctest.DocTestRunner(optionflags=flags)
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{module_name}: {result.failed} docstring example(s) failed"


def test_a_wrong_docstring_example_fails():
    import doctest

    parser = doctest.DocTestParser()
    test = parser.get_doctest(">>> 1 + 1\n3\n", {}, "wrong", None, 0)
    runner = doctest.DocTestRunner()
    runner.run(test, out=lambda _: None)
    assert runner.summarize(verbose=False).failed == 1
