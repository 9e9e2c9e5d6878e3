"""The package's structure as ARCHITECTURE.md states it: the module tree it draws is the one on
disk, the imports form no circle (every import counted, those inside functions too), and the
layers import only downwards."""
import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "convbench"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _resolve(module: str, node: ast.ImportFrom) -> list[str]:
    """The convbench modules an ``from ... import ...`` names (a submodule where the name is
    one, else the package or module itself)."""
    if node.level:
        base = module.split(".")
        if not MODULES[module].name == "__init__.py":
            base = base[:-1]
        base = base[:len(base) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    found = []
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        found.append(sub if sub in MODULES else target)
    return [f for f in found if f in MODULES]


def imports() -> dict[str, set[str]]:
    """Every module's convbench imports, at the top level and inside functions alike."""
    graph = {}
    for module, path in MODULES.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                targets.update(_resolve(module, node))
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name in MODULES)
        targets.discard(module)
        # a package's __init__ running first is not a dependency of its own modules
        graph[module] = {t for t in targets if not module.startswith(t + ".")}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_imports_form_no_circle():
    cycle = _cycle(imports())
    assert cycle is None, " -> ".join(cycle)


def test_a_planted_circle_is_found():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def _importers(prefix: str) -> set[str]:
    return {m for m, targets in imports().items()
            if any(t == prefix or t.startswith(prefix + ".") for t in targets)}


def test_layers_import_only_downwards():
    harness = {m for m in MODULES if m.startswith("convbench.bench")} | {"convbench.cli"}
    assert _importers("convbench.bench") <= harness  # nothing below the harness reaches up
    kernels = {m for m in MODULES if m.startswith(("convbench.cpu", "convbench.cuda"))}
    for upper in ("convbench.auto", "convbench.ops", "convbench.layers", "convbench.costmodel",
                  "convbench.cli", "convbench.peers"):
        assert not (_importers(upper) & kernels), upper
    # the chooser asks the registry's Algorithms, never a kernel module
    assert not {t for t in imports()["convbench.auto"] if t.startswith(("convbench.cpu",
                                                                        "convbench.cuda"))}
    # an error bound must not load the CPU kernels
    assert not {t for t in imports()["convbench.tolerance"] if t.startswith("convbench.cpu")}


def _architecture_tree() -> set[str]:
    """The paths ARCHITECTURE.md's layout block names (files and folders, nested by indent)."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    block = re.search(r"## Layout\n.*?```\n(.*?)```", text, re.S).group(1)
    paths, stack = set(), []
    for line in block.splitlines():
        if not line.strip():
            continue
        indent = (len(line) - len(line.lstrip())) // 2
        name = line.split()[0]
        stack = stack[:indent] + [name.rstrip("/")]
        paths.add("/".join(stack) + ("/" if name.endswith("/") else ""))
    return paths


def test_architecture_draws_the_tree_on_disk():
    drawn = _architecture_tree()
    on_disk = {str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")}
    drawn_files = {p for p in drawn if p.endswith(".py")}
    assert on_disk - drawn_files == set(), "modules ARCHITECTURE.md does not draw"
    assert drawn_files - on_disk == set(), "modules ARCHITECTURE.md draws that do not exist"
    for folder in ("experiments/", "experiments/networks/", "results/", "tests/", "tools/"):
        assert folder in drawn and (ROOT / folder).is_dir()


@pytest.mark.parametrize("name", ["direct", "im2col", "implicit_gemm", "fft", "fft_tiled",
                                  "winograd", "depthwise", "depthwise_cl", "pool"])
def test_the_algorithms_are_what_cpu_holds(name):
    top = {p.stem for p in (PACKAGE / "cpu").glob("*.py")} - {"__init__"}
    assert name in top and len(top) == 9
