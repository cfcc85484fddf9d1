"""Every docstring example in the package runs and prints what it shows.

The examples are the first thing a reader copies; a wrong one teaches the wrong thing.
One test per module, so a failure names the module.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import jaxcnn

MODULES = sorted(info.name for info in pkgutil.walk_packages(jaxcnn.__path__, prefix="jaxcnn."))


def test_the_package_has_modules_to_check():
    assert len(MODULES) > 50 and "jaxcnn.train.lookahead" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
