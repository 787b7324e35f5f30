"""The boundaries DESIGN.md draws, checked on the source: only portal/cluster imports `kubernetes`;
kubesim imports nothing from the portal, and the portal imports kubesim only in the demo."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def files(folder: str):
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", files("portal"), ids=lambda p: str(p.relative_to(ROOT)))
def test_only_the_cluster_package_imports_kubernetes(path):
    if path.is_relative_to(ROOT / "portal" / "cluster"):
        return
    assert not {m for m in imported_modules(path) if m.split(".")[0] == "kubernetes"}


@pytest.mark.parametrize("path", files("portal"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_portal_imports_kubesim_only_in_the_demo(path):
    if path.name == "demo.py":
        return
    assert not {m for m in imported_modules(path) if m.split(".")[0] == "kubesim"}


@pytest.mark.parametrize("path", files("kubesim"), ids=lambda p: str(p.relative_to(ROOT)))
def test_kubesim_imports_nothing_from_the_portal(path):
    assert not {m for m in imported_modules(path) if m.split(".")[0] == "portal"}


def attribute_chains(path: Path) -> set[str]:
    """Every dotted name read in a module (db.session, current_app.config, ...)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    chains = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            chains.add(f"{node.value.id}.{node.attr}")
        elif isinstance(node, ast.Name):
            chains.add(node.id)
    return chains


@pytest.mark.parametrize("path", files("portal/views") + files("portal/api"), ids=lambda p: str(p.relative_to(ROOT)))
def test_views_and_the_api_never_touch_the_database_session(path):
    """Views parse input, call a service and render: the services own every transaction."""
    assert "db.session" not in attribute_chains(path)


@pytest.mark.parametrize("path", files("portal/services"), ids=lambda p: str(p.relative_to(ROOT)))
def test_services_never_read_the_flask_app(path):
    """Services take what they need as arguments, so tests, the CLI and the syncer call them alike."""
    assert not {"current_app", "request", "g", "session"} & imported_names(path)
    assert not {"flask.current_app", "flask.request", "flask.g"} & attribute_chains(path)


def imported_names(path: Path) -> set[str]:
    """The names a module imports from flask."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
            and (node.module or "").split(".")[0] == "flask" for alias in node.names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: str = "portal") -> dict[str, set[str]]:
    """Module -> the modules of the package it imports (at any depth of the code, functions too)."""
    modules = {module_name(p): p for p in files(package)}
    graph = {}
    for name, path in modules.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom):
                base = here.split(".")[:len(here.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else [])) if node.level else (node.module or "")
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    found.add(full if full in modules else target)
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_portal_has_no_import_cycle():
    """Modules import one way: two modules that import each other (even from inside a function)
    are one module pretending to be two."""
    graph = import_graph()
    assert "portal.services.scheduling.plan" in graph and graph["portal.services.scheduling.admission"]
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_scheduling_package_imports_one_way():
    """plan <- state <- usage <- admission <- schedule; estimates and pages read state and plan."""
    graph = import_graph()
    inside = {m.rpartition(".")[2]: {d.rpartition(".")[2] for d in deps if d.startswith("portal.services.scheduling.")}
              for m, deps in graph.items() if m.startswith("portal.services.scheduling.")}
    assert inside["plan"] == set()
    assert inside["state"] == {"plan"}
    assert "admission" not in inside["state"] | inside["usage"] | inside["plan"] | inside["estimates"]


@pytest.mark.parametrize("path", files("tests"), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_test_checks_something(path):
    """A test that cannot fail is worse than none: each test function asserts, expects an error or
    waits for a condition (directly or through a helper of its module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    helpers = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    checking = ("raises", "fail", "warns", "wait_for", "wait_state", "wait_for_selector", "expect")

    def checks(fn, seen=()) -> bool:
        for node in ast.walk(fn):
            if isinstance(node, ast.Assert):
                return True
            if isinstance(node, ast.Call):
                f = node.func
                name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
                if name in checking or name.startswith("assert"):
                    return True
                if name in helpers and name not in seen and checks(helpers[name], (*seen, name)):
                    return True
        return False

    idle = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_") and not checks(n)]
    assert idle == []
