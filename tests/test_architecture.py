"""The import drawing: who may import whom (README "Architecture").

The rules themselves are import-linter contracts in pyproject.toml (`lint-imports` prints
them); this test keeps them, and adds what import-linter does not check: no two modules of
the project import each other in a circle, directly or through others, function-level
imports included.
"""

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
APPS = ("chatbot", "feedback", "training")


def import_circles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every set of modules that import each other in a circle (strongly connected
    components of more than one module), each sorted; migrations left out."""
    modules = sorted(m for m in graph.modules if ".migrations" not in m)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m) & set(modules)) for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(start: str) -> None:
        # Tarjan's algorithm, iterative (no recursion limit on a long chain).
        work = [(start, iter(edges[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    circles.append(sorted(component))

    for module in modules:
        if module not in index:
            visit(module)
    return circles


def test_import_circles_found_when_present():
    graph = grimp.ImportGraph()
    for name in ("a", "a.x", "a.y", "a.z"):
        graph.add_module(name)
    graph.add_import(importer="a.x", imported="a.y")
    graph.add_import(importer="a.y", imported="a.z")
    graph.add_import(importer="a.z", imported="a.x")
    assert import_circles(graph) == [["a.x", "a.y", "a.z"]]
    graph.remove_import(importer="a.z", imported="a.x")
    assert import_circles(graph) == []


def test_no_import_circles():
    graph = grimp.build_graph(*APPS, cache_dir=None)
    assert import_circles(graph) == []


def test_import_contracts_kept():
    """chatbot's app code imports neither feedback nor training (pyproject.toml)."""
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
