"""The package's layers (CONTRIBUTING.md, "Architecture"): every import, inside functions included,
goes down the stack or stays in its own subpackage, and no modules import each other in a
circle. Read from the source, so nothing needs to be imported to check it."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "diffusion_course"
# Bottom to top; layers of equal rank may not import each other.
LAYERS = {"data": 0, "diffusion": 0, "models": 1, "training": 2, "evaluation": 3, "course": 4, "recipes": 5}


def module_imports(path: Path, package: Path) -> list[tuple[str, int]]:
    """(imported name, line) for every import of the package in ``path`` at any depth of the
    file, as dotted names relative to the package ("training.cache.cached")."""
    parts = path.relative_to(package).with_suffix("").parts
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = ".".join(parts[:len(parts) - node.level] + ((node.module,) if node.module else ()))
            found += [(f"{base}.{a.name}".lstrip("."), node.lineno) for a in node.names]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [f"{node.module}.{a.name}" for a in node.names]
            found += [(n.split(".", 1)[1], node.lineno) for n in names if n.startswith("diffusion_course.")]
    return found


def graph(package: Path = PACKAGE) -> dict[str, list[tuple[str, int]]]:
    """module -> (module of the package it imports from, line)."""
    modules = {".".join(p.relative_to(package).with_suffix("").parts): p for p in package.rglob("*.py")}

    def owner(name: str) -> str:          # the longest prefix that is a module
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    return {m: [(owner(t) or t, line) for t, line in module_imports(p, package)] for m, p in modules.items()}


def upward_imports(package: Path = PACKAGE) -> list[str]:
    found = []
    for module, targets in graph(package).items():
        layer = module.split(".")[0]
        if layer not in LAYERS:
            continue               # __init__, __main__: the package's entry points
        for target, line in targets:
            other = target.split(".")[0]
            if other != layer and LAYERS.get(other, -1) >= LAYERS[layer]:
                found.append(f"{module}:{line} imports {target}")
    return found


def circles(package: Path = PACKAGE) -> list[list[str]]:
    edges = {m: {t for t, _ in ts if t != m} for m, ts in graph(package).items()}
    state, stack, found = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in sorted(edges.get(m, ())):
            if state.get(t) == "open":
                found.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m)
    return found


def test_every_module_sits_in_a_layer():
    loose = [p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert not loose, f"modules outside the layers: {loose}"
    assert {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()} == set(LAYERS)


def test_imports_only_go_down():
    assert not upward_imports(), "\n".join(upward_imports())


def test_no_import_circles():
    assert not circles(), "\n".join(" -> ".join(c) for c in circles())


def fake_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize("source, found", [
    ("from ..recipes.mnist_ddpm import make_unet\n", "training.loop:1 imports recipes.mnist_ddpm"),
    ("def f():\n    from ..course import settings\n", "training.loop:2 imports course.settings"),
    ("import diffusion_course.recipes.mnist_ddpm\n", "training.loop:1 imports recipes.mnist_ddpm"),
])
def test_the_checks_see_an_upward_import_even_inside_a_function(tmp_path, source, found):
    package = fake_package(tmp_path, {"training/loop.py": source, "recipes/mnist_ddpm.py": "",
                                      "course/settings.py": ""})
    assert upward_imports(package) == [found]


def test_the_checks_see_a_circle(tmp_path):
    package = fake_package(tmp_path, {"data/a.py": "from .b import x\n", "data/b.py": "def f():\n    from .a import y\n"})
    assert circles(package) == [["data.a", "data.b", "data.a"]] and not upward_imports(package)
