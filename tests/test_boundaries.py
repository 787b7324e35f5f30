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
