"""Runs the doctested examples of every jaxemb module (under the 8-device conftest)."""

import doctest
import importlib
import pkgutil

import pytest

import jaxemb


def _modules():
    names = [jaxemb.__name__]
    for info in pkgutil.walk_packages(jaxemb.__path__, prefix="jaxemb."):
        names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_doctests(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    for test in finder.find(module, name, globs={}):
        if test.filename is not None and not test.filename.startswith(jaxemb.__path__[0]):
            continue
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
