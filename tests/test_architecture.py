"""The house as installed: one import name, the floors of the layers contract, no import cycle.

A real ``pip install`` of this checkout into a temporary folder is what the tests read: the
package-dir mapping puts folders that live side by side here (``pretrain/``, ``transfer/``, ...)
under one package, ``mocobench``, and only the installed tree shows what a user gets. The layers
contract and the cycle check use the real tools (``lint-imports`` and its graph library ``grimp``),
which see every import statement, including those inside functions.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# The folders the package is made of, as the package-dir mapping says (``mocobench.core`` -> ``core``).
PACKAGE_DIRS = PYPROJECT["tool"]["setuptools"]["package-dir"]
OLD_TOP_LEVEL = {"core", "datasets", "checkpoints", "pretrain", "transfer", "leaderboard"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """This checkout, ``pip install``-ed (no dependencies) into a fresh folder: the site-packages
    a user's ``pip install .`` makes, minus what it depends on."""
    src = tmp_path_factory.mktemp("src")
    for name in ["pyproject.toml", "README.md", *PACKAGE_DIRS.values()]:
        from_ = ROOT / name
        if from_.is_dir():
            shutil.copytree(from_, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(from_, src / name)
    target = tmp_path_factory.mktemp("site")
    out = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--no-index", "--target", str(target), str(src)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    return target


def run_isolated(installed: Path, argv: list[str], **kw) -> subprocess.CompletedProcess:
    """``argv`` with the installed copy first on the path and the checkout nowhere on it: a module
    of the checkout imported by an old top-level name (``import core``) is then not found."""
    env = {**os.environ, "PYTHONPATH": f"{installed}{os.pathsep}{ROOT}" if kw.pop("with_benchmarks", False)
           else str(installed)}
    return subprocess.run(argv, cwd=installed, env=env, capture_output=True, text=True, **kw)


def test_pip_install_adds_one_top_level_package(installed):
    names = {p.name for p in installed.iterdir()
             if not p.name.endswith((".dist-info", ".egg-info")) and p.name not in {"bin", "__pycache__"}}
    assert names == {"mocobench"}
    # Every folder of a mapped package that is a package (has __init__.py) is installed: a new
    # subpackage missing from pyproject.toml's explicit list would silently be left out of the wheel.
    for package, folder in PACKAGE_DIRS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            assert (installed / package.replace(".", "/") / rel / "__init__.py").is_file(), \
                f"{init.parent} is not installed: add it to [tool.setuptools] packages"
    for data in ["checkpoints/zoo.toml", "leaderboard/reported.csv", "leaderboard/baselines/quick.json"]:
        assert (installed / "mocobench" / data).is_file(), data


def test_every_installed_module_imports(installed):
    """Each module of the installed package imports with the checkout off the path (an old-style
    ``from core import ...`` anywhere would fail here, though it works from the repository root)."""
    modules = sorted(".".join(p.relative_to(installed).with_suffix("").parts).removesuffix(".__init__")
                     for p in (installed / "mocobench").rglob("*.py") if p.name != "__main__.py")
    code = "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)\nprint('ok', len(sys.argv) - 1)"
    out = run_isolated(installed, [sys.executable, "-c", code, *modules], timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == f"ok {len(modules)}"


def test_no_source_file_imports_an_old_top_level_name():
    """Tests and benchmarks run with the repository root on the path, where ``import core`` would
    still work and load a second copy of a module: every import names ``mocobench.``."""
    files = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert files, "git ls-files found no Python file"
    bad = []
    for f in files:
        tree = ast.parse((ROOT / f).read_text(encoding="utf-8"), filename=f)
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            bad += [f"{f}:{node.lineno}: {n}" for n in names if n.split(".")[0] in OLD_TOP_LEVEL]
    assert bad == []


def contract_layers() -> list[list[str]]:
    contract, = [c for c in PYPROJECT["tool"]["importlinter"]["contracts"] if c["id"] == "floors"]
    return [[m.strip() for m in layer.replace(":", "|").split("|")] for layer in contract["layers"]]


def test_every_part_of_the_package_is_on_a_floor(installed):
    """Each direct child of ``mocobench`` (a subpackage or a module) is named in exactly one floor
    of the contract, and nothing named there is missing: a package left out fails here."""
    named = [m for layer in contract_layers() for m in layer]
    assert len(named) == len(set(named)), f"named twice: {sorted(m for m in named if named.count(m) > 1)}"
    children = {f"mocobench.{p.stem}" for p in (installed / "mocobench").iterdir()
                if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    assert children - set(named) == set(), "not on any floor of pyproject.toml's contract"
    assert set(named) - children - {"benchmarks"} == set(), "named in the contract but not installed"
    assert (ROOT / "benchmarks" / "__init__.py").is_file()


def test_layers_contract_is_kept(installed):
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(exe).exists():
        pytest.fail("lint-imports is missing: install the 'test' extra (pip install -e '.[test]')")
    out = run_isolated(installed, [exe, "--no-cache", "--config", str(ROOT / "pyproject.toml")],
                       with_benchmarks=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the components of more than one node (or a self-loop)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                if len(comp) > 1 or node in graph.get(node, ()):
                    found.append(sorted(comp))
    return found


def test_tarjan_finds_a_planted_cycle():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert sorted(strongly_connected(g)) == [["a", "b", "c"], ["e"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_no_module_import_cycle(installed):
    try:
        import grimp  # noqa: F401
    except ImportError as e:   # in CI nothing may skip
        if os.environ.get("CI") == "true":
            pytest.fail(f"grimp comes with import-linter (the 'test' extra): {e}")
        pytest.skip(f"grimp comes with import-linter (the 'test' extra): {e}")
    code = ("import grimp, json\n"
            "g = grimp.build_graph('mocobench', 'benchmarks', cache_dir=None)\n"
            "print(json.dumps({m: sorted(g.find_modules_directly_imported_by(m)) for m in g.modules}))")
    out = run_isolated(installed, [sys.executable, "-c", code], with_benchmarks=True)
    assert out.returncode == 0, out.stderr
    import json

    edges = {m: set(v) for m, v in json.loads(out.stdout).items()}
    assert any(m.startswith("mocobench.transfer.") for m in edges) and "benchmarks" in edges
    cycles = strongly_connected(edges)
    assert cycles == [], f"import cycles (function-level imports count): {cycles}"
