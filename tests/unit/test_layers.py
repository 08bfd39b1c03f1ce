"""The package's layers, checked over its import graph (every import, also inside functions).

Lower layers never import higher ones; only the engine package (`builder.engine`) imports
docker, and the rest of the tool uses it through the package's public interface; file
formats are bytes in, data out; only `config.settings` reads the environment; no import cycles.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import ROOT

PACKAGE = ROOT / "builder"

# Layer of each module or subpackage (the longest matching prefix wins). A module may import
# its own layer and the ones below it, never one above.
LAYERS = {
    "builder": 0,  # the package itself: __version__
    "builder.errors": 0,
    "builder.log": 0,
    "builder.formats.redact": 0,  # a leaf: what log and the records mask
    "builder.formats": 1,
    "builder.config": 2,
    "builder.agent.client": 2,
    "builder.agent.contract": 2,
    "builder.agent.guest_scripts": 2,  # shell text only (the service files' names)
    "builder.host": 3,
    "builder.engine": 3,
    "builder.agent.contract_in_vm": 4,
    "builder.agent.guest_test": 4,
    "builder.run_context": 5,
    "builder.boxes": 5,
    "builder.caches": 5,
    "builder.outputs": 5,
    "builder.stages": 5,
    "builder.pipeline": 6,
    "builder.commands": 7,
    "builder.option_parser": 8,
    "builder.arguments": 8,
    "builder.arguments_upkeep": 8,
    "builder.cli": 8,
    "builder.__main__": 9,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node but those under `if TYPE_CHECKING:` (imports for annotations only, which
    never run, so they make no cycle)."""
    skipped = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If)
        and isinstance(node.test, ast.Name)
        and node.test.id == "TYPE_CHECKING"
        for inner in ast.walk(node)
    }
    return [node for node in ast.walk(tree) if id(node) not in skipped]


def imports_of(path: Path) -> set[str]:
    """Every module imported anywhere in the file (`from a import b` counts b if a module),
    also inside functions; not the annotations-only imports under `if TYPE_CHECKING:`."""
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names}
            found.update(submodules & set(MODULES))
            if not submodules <= set(MODULES):  # names from the module itself
                found.add(node.module)
    return found


GRAPH = {name: {m for m in imports_of(path) if m in MODULES} for name, path in MODULES.items()}


def layer(module: str) -> int:
    prefixes = [p for p in LAYERS if module == p or module.startswith(p + ".")]
    assert prefixes, f"{module} is in no layer: add it to LAYERS"
    return LAYERS[max(prefixes, key=len)]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_a_higher_layer(module: str) -> None:
    upward = sorted(m for m in GRAPH[module] if layer(m) > layer(module))
    assert not upward, f"{module} (layer {layer(module)}) imports higher layers: {upward}"


def test_only_the_engine_imports_docker() -> None:
    users = sorted(
        name
        for name, path in MODULES.items()
        if any(m == "docker" or m.startswith(("docker.", "requests")) for m in imports_of(path))
    )
    # The connection, the engine, the container it hands out and the ssh transport (docker-py's,
    # with deadlines); endpoints (which engine a name means) and records stay pure.
    assert users == [
        "builder.engine.connection",
        "builder.engine.container",
        "builder.engine.engine",
        "builder.engine.ssh",
    ]


def test_the_engine_is_used_through_its_package() -> None:
    """Outside builder/engine/ nothing imports an engine module, only the package; inside it,
    no module takes another's private names."""
    for name, path in MODULES.items():
        inner = sorted(m for m in GRAPH[name] if m.startswith("builder.engine."))
        if not name.startswith("builder.engine"):
            assert not inner, f"{name} imports {inner}: use `from builder.engine import ...`"
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("builder."):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{name} imports {private} from {node.module}"
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
                owner = node.value.attr  # self.connection._call, self.engine._gone ...
                if owner in ("engine", "connection") and node.attr.startswith("_"):
                    raise AssertionError(f"{name} calls {owner}.{node.attr}")


def test_formats_import_nothing_of_the_pipeline() -> None:
    allowed = {"builder", "builder.errors"}
    for name in (m for m in MODULES if m.startswith("builder.formats")):
        outside = {
            m for m in GRAPH[name] if not m.startswith("builder.formats") and m not in allowed
        }
        assert not outside, f"{name} imports {sorted(outside)}"


def test_only_settings_reads_the_environment() -> None:
    readers = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("getenv", "environ"):
                readers.append(name)
    assert sorted(set(readers)) == ["builder.config.settings"]


def test_no_import_cycles() -> None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(GRAPH[node]):
            if target == node or target == "builder":
                continue
            if state.get(target) == 1:
                cycle = [*path[path.index(target) :], target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)


def test_modules_stay_small() -> None:
    """A module one can read in one sitting; the orchestrator reads as its table."""
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert sizes["builder.pipeline"] <= 200
    assert max(sizes.values()) <= 500, max(sizes, key=sizes.get)
