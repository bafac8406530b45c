"""The import graph points one way: samplers and likelihood see only sde (Style: 'Pure math inside')."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROJECT = {"sde", "models", "samplers", "likelihood", "data", "training", "evaluation", "configs", "main"}
ALLOWED = {
    "sde": {"sde"},
    "samplers": {"sde", "samplers"},
    "likelihood": {"sde", "likelihood"},
    "models": {"sde", "models"},
    "data": {"sde", "data"},
}


def project_imports(path: pathlib.Path) -> set[str]:
    """Top-level project packages imported anywhere in a file (relative imports count as the file's own)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add(path.relative_to(ROOT).parts[0] if node.level else (node.module or "").split(".")[0])
    return found & PROJECT


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_down(package):
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = project_imports(path) - ALLOWED[package]
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}; {package}/ may import only {ALLOWED[package]}"


@pytest.mark.parametrize("package", ["sde", "samplers", "likelihood", "models"])
def test_no_io_in_math_packages(package):
    """No prints, progress bars or file I/O inside the pure-math packages."""
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                assert node.func.id not in {"print", "open"}, f"{where} calls {node.func.id}"
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = {a.name for a in node.names} | {getattr(node, "module", None) or ""}
                assert not names & {"tqdm", "tensorboard"}, f"{path.relative_to(ROOT)} imports {names}"
