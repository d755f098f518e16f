"""The workspace façade (issue #19 item 6): ``Workspace`` holds the data and ``ingest``;
every other stage is a function taking the workspace first, so ``workspace.py`` (below the
stages) imports no stage above ingest, not even inside a function body."""

import ast
from pathlib import Path

import smartset

ABOVE_INGEST = ("audit", "clean", "review", "augment", "learn", "detection")


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_workspace_imports_no_stage_above_ingest():
    source = Path(smartset.__file__).with_name("workspace.py")
    stages = {name for name in _imports(source)
              if name.split(".")[0] == "smartset" and len(name.split(".")) > 1
              and name.split(".")[1] in ABOVE_INGEST}
    assert not stages, f"workspace.py imports stages above ingest: {sorted(stages)}"


def test_stage_work_is_a_function_not_a_workspace_method():
    from smartset.workspace import Workspace

    for name in ("audit", "train", "predict_oof", "evaluate", "make_plan", "augment"):
        assert not hasattr(Workspace, name), f"Workspace.{name}: stages are functions"
    assert callable(Workspace.ingest) and callable(Workspace.dataset)
