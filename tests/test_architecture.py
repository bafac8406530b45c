"""The import graph of every package points one way, with no circles (Style: 'Pure math inside'):

    main -> training, evaluation -> compose -> models, data, samplers, likelihood, losses, infra -> sde

Samplers, the likelihood and the losses see only sde; training and evaluation never import each other; infra
(files, locks, RNG state, torchrun) imports no project package; configs hold plain config files."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
MATH = {"sde", "samplers", "likelihood", "models", "data", "losses"}
ALLOWED = {
    "sde": {"sde"},
    "samplers": {"sde", "samplers"},
    "likelihood": {"sde", "likelihood"},
    "losses": {"sde", "losses"},
    "models": {"sde", "models"},
    "data": {"sde", "data"},
    "infra": {"infra"},
    "configs": {"configs"},
    "compose": MATH | {"compose", "configs", "infra"},
    "training": MATH | {"training", "compose", "configs", "infra"},
    "evaluation": MATH | {"evaluation", "compose", "configs", "infra"},
    "main": {"main", "compose", "configs", "infra", "training", "evaluation"},
}
PROJECT = set(ALLOWED)


def files(package: str) -> list[pathlib.Path]:
    return [ROOT / "main.py"] if package == "main" else sorted((ROOT / package).rglob("*.py"))


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: pathlib.Path) -> set[str]:
    """Project modules imported anywhere in a file (function-local imports too), resolved to module names."""
    found, me = set(), module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from pkg import submodule`
    modules = {module_name(p) for pkg in PROJECT for p in files(pkg)}
    return {m for m in found if m in modules and m != me}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_down(package):
    for path in files(package):
        bad = {m.split(".")[0] for m in imported_modules(path)} - ALLOWED[package]
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}; {package}/ may import only {ALLOWED[package]}"


def test_every_package_is_covered():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert packages <= set(ALLOWED), f"packages without a rule: {sorted(packages - set(ALLOWED))}"


def test_no_import_circles():
    """No module reaches itself through imports (function-local ones included)."""
    graph = {module_name(p): imported_modules(p) for pkg in PROJECT for p in files(pkg)}
    for name in graph:  # a package's __init__ importing its own submodules is not a circle through them
        if (ROOT / name.replace(".", "/") / "__init__.py").exists():
            graph[name] = {m for m in graph[name] if not m.startswith(name + ".")}
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(nxt) :] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)


@pytest.mark.parametrize("package", sorted(MATH))
def test_no_io_in_math_packages(package):
    """No prints, progress bars or file I/O inside the pure-math packages (data/ reads and writes data files)."""
    for path in files(package):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if package != "data" and isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                assert node.func.id not in {"print", "open"}, f"{where} calls {node.func.id}"
            if isinstance(node, (ast.Import, ast.ImportFrom)) and package != "data":
                names = {a.name for a in node.names} | {getattr(node, "module", None) or ""}
                assert not names & {"tqdm", "tensorboard"}, f"{path.relative_to(ROOT)} imports {names}"


def test_samplers_and_likelihood_never_read_a_path_name():
    """The SDE object is the only contract: no `sde.name` (or `.name ==`) in the samplers, likelihood or losses."""
    for package in ("samplers", "likelihood", "losses"):
        for path in files(package):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and node.attr == "name":
                    raise AssertionError(f"{path.relative_to(ROOT)}:{node.lineno} reads .name")
