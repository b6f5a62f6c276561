"""lenscape.analysis as a notebook uses it: every exported name resolves, every exported function
says what it takes and returns with an example, and every example runs (the doctests run here, in CI)."""

import doctest
import importlib
import inspect
import pkgutil

import pytest

import lenscape.analysis as api

MODULES = sorted(m.name for m in pkgutil.iter_modules(api.__path__))


def test_every_exported_name_resolves_and_nothing_else_is_claimed():
    assert api.__all__ == sorted(set(api.__all__)) and len(api.__all__) > 40
    for name in api.__all__:
        assert getattr(api, name) is getattr(importlib.import_module(f"lenscape.analysis.{api._WHERE[name]}"), name)
    with pytest.raises(AttributeError, match="no_such_function"):
        api.no_such_function  # noqa: B018 - the access is the test


@pytest.mark.parametrize("name", [n for n in api.__all__ if inspect.isfunction(getattr(api, n))])
def test_every_exported_function_has_args_returns_and_an_example(name):
    doc = inspect.getdoc(getattr(api, name)) or ""
    assert "Args:" in doc and "Returns:" in doc and ">>>" in doc, f"{name}: docstring lacks Args/Returns/example"


@pytest.mark.parametrize("module", ["__init__", *MODULES])
def test_the_examples_run(module):
    mod = api if module == "__init__" else importlib.import_module(f"lenscape.analysis.{module}")
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(mod, mod.__name__):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{module}: {result.failed} of {result.attempted} examples failed"


def test_same_input_same_name_in_the_main_entry_points():
    """The convention of lenscape.analysis's docstring, on the functions a notebook reaches first."""
    for name in (
        "evaluate",
        "extract",
        "compute_saliency",
        "attribute",
        "model_randomization",
        "null_mass",
        "level_set_traversal",
        "gradient_account",
        "flip_neurons",
        "retrain_group",
        "surface",
        "interpolation",
        "recompute_bn_statistics",
    ):
        params = list(inspect.signature(getattr(api, name)).parameters)
        assert params[0] == "model", name
        assert "images" in params and "x" not in params and "source" not in params, (name, params)
        if "config" in params:
            assert params.index("config") > params.index("images"), (name, params)
