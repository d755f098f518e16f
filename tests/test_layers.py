"""The declared layer order (README, "Code map"): a module imports only modules of its own
layer or below. Stages above the shared modules, in this order:

    shared (errors, catalog, workspace, events, embeddings, neighbours, backbones, ...)
      < ingest < augment < audit < learn < detection < clean < review
      < command line (cli.py, any _cli*.py module)

Imports are read from the source (top level and inside functions alike), so a back-import
hidden in a function body fails here as well as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import smartset

PACKAGE = Path(smartset.__file__).parent
STAGES = ("ingest", "augment", "audit", "learn", "detection", "clean", "review")
CLI = len(STAGES) + 1
# The one sanctioned upward call: the Workspace holds the data and how it comes in
# (ws.ingest, ws.add_derived_samples delegate to the ingest stage); every later stage is a
# function that takes the workspace (the façade rule in workspace.py's docstring).
ALLOWED = {("smartset.workspace", "smartset.ingest")}


def _layer(module: str) -> int:
    parts = module.split(".")
    if parts[-1] in ("cli", "__main__") or parts[-1].startswith("_cli") or parts[-1].endswith("_cli"):
        return CLI
    if len(parts) > 1 and parts[1] in STAGES:
        return STAGES.index(parts[1]) + 1
    return 0  # the shared modules below every stage


def _module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module: str):
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            yield node.lineno, name


def violations(package: Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        module = _module_name(path, package)
        mine = _layer(module)
        for line, name in _imports(path, module):
            if not name.startswith("smartset.") or (module, name.split(".")[0] + "." +
                                                    name.split(".")[1]) in ALLOWED:
                continue
            if _layer(name) > mine:
                found.append(f"{path.relative_to(package.parent)}:{line} ({module}, layer "
                             f"{mine}) imports {name} (layer {_layer(name)})")
    return found


def test_no_module_imports_a_layer_above_its_own():
    assert violations() == []


def test_the_check_catches_a_back_import(tmp_path):
    fake = tmp_path / "smartset"
    (fake / "audit").mkdir(parents=True)
    (fake / "learn").mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "learn" / "__init__.py").write_text("from smartset.audit import run\n")
    (fake / "audit" / "__init__.py").write_text(
        "def run():\n    from smartset.learn._workspace import _load_model\n")
    assert [v.split(" imports ")[1] for v in violations(fake)] == [
        "smartset.learn._workspace (layer 4)"]
