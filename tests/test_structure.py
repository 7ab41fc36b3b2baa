"""The package's structure, as docs/structure.md describes it: layers that import only downwards,
no import cycle, no two folders that import each other, nothing that imports the run, and the
shape of a network's input computed in one place (litcompress.spec).

The import graph is read from the source with ``ast`` (every ``import`` and ``from ... import``,
at module level or inside functions), so that a lazy import counts as much as an eager one.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "src" / "litcompress"

# Layer of each module or folder, from the ground up: a module imports only from its own layer
# or below. A folder's entry covers every module inside it.
LAYERS: dict[str, int] = {
    # 0: the ground: no litcompress import but each other
    **dict.fromkeys(
        [
            "errors",
            "noise",
            "compat",
            "seeding",
            "resolvers",
            "version",
            "spec",
            "pictures",
            "cluster",
            "forms",
            "instantiate",
            "measure",
            "callbacks",
            "optim",
            "run_folder",
            "litcompress",  # the package's face
        ],
        0,
    ),
    # 1: data, networks, int8 building blocks
    **dict.fromkeys(["data", "models", "quant"], 1),
    # 2: checkpoints, output folders, the report, the LightningModule
    **dict.fromkeys(["checkpoint", "outputs", "report", "module"], 2),
    # 3: techniques and deployment
    **dict.fromkeys(["compress", "deploy", "sensitivity"], 3),
    # 4: the steps of a run
    **dict.fromkeys(["build", "preflight", "resume", "deliver", "sweeps", "auto"], 4),
    # 5: entry points
    **dict.fromkeys(["run", "cli", "__main__"], 5),
}
# Within a layer, imports that must not exist (folder, folder it must not import).
FORBIDDEN = [("deploy", "compress"), ("quant", "deploy"), ("checkpoint", "compress")]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """``module -> the litcompress modules it imports`` for every module of the package."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("litcompress"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    imported.add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                imported |= {a.name for a in node.names if a.name.startswith("litcompress")}
        graph[name] = {m for m in imported if m in modules and m != name}
    return graph


def unit(module: str) -> str:
    """The entry of LAYERS a module falls under: its folder, or itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_every_module_has_a_layer_and_imports_only_downwards():
    graph = import_graph()
    unplaced = sorted({unit(m) for m in graph} - set(LAYERS))
    assert unplaced == [], "give these a layer in LAYERS and in docs/structure.md"
    upward = [
        f"{a} (layer {LAYERS[unit(a)]}) imports {b} (layer {LAYERS[unit(b)]})"
        for a, imported in graph.items()
        for b in imported
        if LAYERS[unit(b)] > LAYERS[unit(a)]
    ]
    assert upward == []
    forbidden = [
        f"{a} imports {b}"
        for a, imported in graph.items()
        for b in imported
        if (unit(a), unit(b)) in FORBIDDEN
    ]
    assert forbidden == []


def test_no_import_cycle_and_no_two_folders_import_each_other():
    graph = import_graph()
    cycles, seen = [], set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycles.append(path[path.index(module) :] + [module])
            return
        if module in seen:
            return
        seen.add(module)
        for imported in sorted(graph[module]):
            visit(imported, [*path, module])

    for module in sorted(graph):
        visit(module, [])
    assert cycles == []
    ties = {(unit(a), unit(b)) for a, imported in graph.items() for b in imported}
    assert sorted((a, b) for a, b in ties if a != b and (b, a) in ties) == []


def test_nothing_in_the_package_imports_the_run():
    graph = import_graph()
    assert sorted(m for m, imported in graph.items() if "litcompress.run" in imported) == []


def test_the_input_shape_is_computed_in_one_place():
    """Only litcompress.spec reads a network config's channels (to make its input shape)."""
    pattern = re.compile(r"""\[["']in_channels["']\](?!\s*=)""")
    places = sorted(
        module_name(path)
        for path in PACKAGE.rglob("*.py")
        if pattern.search(path.read_text()) and module_name(path) != "litcompress.spec"
    )
    assert places == []
