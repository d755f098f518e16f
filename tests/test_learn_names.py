"""``smartset.learn``'s public names stay what they say after any other use of the package
(issue #19 item 6): ``learn.baselines`` was both the workspace function and a submodule, and
importing the submodule (as ``learn.train`` did) replaced the function with the module."""

import importlib
import subprocess
import sys

import pytest


def test_learn_baselines_stays_the_function_after_train_is_used():
    # A fresh interpreter: the failure depended on the order of first imports.
    code = ("import smartset.learn as learn\n"
            "learn.train\n"  # loads learn._workspace, which imports the baselines module
            "import smartset.learn._workspace\n"
            "assert callable(learn.baselines), type(learn.baselines)\n"
            "assert learn.baselines.__module__ == 'smartset.learn._workspace'\n"
            "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_no_public_learn_name_is_shadowed_by_a_submodule():
    import pkgutil

    import smartset.learn as learn

    modules = {m.name for m in pkgutil.iter_modules(learn.__path__)}
    for name in learn.__all__:
        assert name not in modules, f"smartset.learn.{name} is both a name and a module"
    # every exported name resolves, and the array functions are the ones documented
    for name in learn.__all__:
        assert getattr(learn, name) is not None


@pytest.mark.parametrize("module, name", [("smartset.learn.robustness", "metrics_by_bucket"),
                                          ("smartset.detection._rle", "mask_iou")])
def test_dead_code_is_gone(module, name):
    assert not hasattr(importlib.import_module(module), name)
