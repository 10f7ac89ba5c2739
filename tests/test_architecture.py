"""The package's shape, read from source with ``ast`` (nothing is imported): imports among the
modules of rlviz/, agents/ and envs/ (installed as ``rlviz.agents`` and ``rlviz.envs``) form no
cycle and never run up the layers (engine < envs < agents < cli), nothing imports the bare names
``envs`` / ``agents`` (a user's own packages of those names), and ``import rlviz`` loads no env,
agent or Stable-Baselines3 code."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rlviz"
# Repository folder -> the dotted name it installs as (setup.py's APP_FOLDERS).
SOURCE_FOLDERS = {"rlviz": "rlviz", "envs": "rlviz.envs", "agents": "rlviz.agents"}
APPLICATION = {"rlviz.envs", "rlviz.agents"}  # packages only the CLI may import from rlviz/
BARE_NAMES = {"envs", "agents"}  # a user's own packages; ours are never imported by these names
# Layers, lowest first: a module may import its own layer and those below, never one above.
LAYERS = ("engine", "rlviz.envs", "rlviz.agents", "rlviz.cli")
ENTRY_POINTS = {"rlviz.__main__"}  # `python -m rlviz`: the CLI's layer
CLI_DIR = PACKAGE / "cli"
SHIM_MARK = "# TRANSITION SHIM"
# What `import rlviz` must not load: the package promises torch + numpy only at import time.
FORBIDDEN_AT_IMPORT = ("rlviz.envs", "rlviz.agents", "miniworld", "pyglet", "stable_baselines3", "gymnasium")


@dataclass(frozen=True)
class Import:
    """One import statement: who imports what, and where."""

    source: str  # importing module, dotted
    target: str  # imported module, dotted (absolute)
    path: Path
    line: int

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def module_name(path: Path) -> str:
    """``rlviz/a/b.py`` -> ``rlviz.a.b``; ``agents/a.py`` -> ``rlviz.agents.a`` (as installed);
    ``rlviz/a/__init__.py`` -> ``rlviz.a``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    parts[0] = SOURCE_FOLDERS.get(parts[0], parts[0])
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    """Every module under rlviz/, agents/ and envs/, by its installed dotted name."""
    return {
        module_name(p): p for folder in SOURCE_FOLDERS for p in sorted((ROOT / folder).rglob("*.py"))
    }


def layer_of(module: str) -> int:
    """Index in :data:`LAYERS` of a module's layer (everything else in rlviz is the engine)."""
    if module in ENTRY_POINTS:
        return LAYERS.index("rlviz.cli")
    for index in range(len(LAYERS) - 1, 0, -1):
        if module == LAYERS[index] or module.startswith(LAYERS[index] + "."):
            return index
    return 0


def _resolve_relative(source: str, is_package: bool, level: int, module: str | None) -> str:
    """The absolute name of ``from <level dots><module> import ...`` written in ``source``."""
    base = source.split(".") if is_package else source.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _import_module_target(node: ast.Call) -> str | None:
    """The constant string given to ``importlib.import_module("x")``, if that is what this is."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name != "import_module" or not node.args:
        return None
    arg = node.args[0]
    return arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None


def imports_of(path: Path, known: dict[str, Path]) -> list[Import]:
    """Every import in one file: module level, inside functions and under ``if TYPE_CHECKING:``.

    ``from p import n`` targets the module ``p.n`` when that is a module of the package, else
    ``p``; ``importlib.import_module("x")`` with a constant name counts as ``import x``.
    """
    source = module_name(path)
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = _resolve_relative(source, is_package, node.level, node.module)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.append(sub if sub in known else base)
        elif isinstance(node, ast.Call) and (name := _import_module_target(node)):
            targets = [name]
        found += [Import(source, t, path, node.lineno) for t in dict.fromkeys(targets)]
    return found


def all_imports() -> list[Import]:
    known = package_modules()
    return [imp for path in known.values() for imp in imports_of(path, known)]


Graph = dict[str, dict[str, list[Import]]]


def build_graph(known: dict[str, Path], imports: list[Import]) -> Graph:
    """Module -> {imported module of ``known``: the import statements that make the edge}."""
    graph: Graph = {name: {} for name in known}
    for imp in imports:
        if imp.target in known and imp.target != imp.source:
            graph[imp.source].setdefault(imp.target, []).append(imp)
    return graph


def strongly_connected(graph: Graph) -> list[list[str]]:
    """Tarjan's components with more than one module, each sorted, iteratively (no recursion)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(components)


def shortest_cycle(graph: Graph, start: str, members: set[str]) -> list[str]:
    """The shortest import path from ``start`` back to itself inside one component."""
    parents = {start: None}
    queue = [start]
    for node in queue:
        for child in sorted(graph[node]):
            if child == start:
                path = [node]
                while parents[path[-1]] is not None:
                    path.append(parents[path[-1]])
                return [start, *reversed(path[:-1]), start] if len(path) > 1 else [start, start]
            if child in members and child not in parents:
                parents[child] = node
                queue.append(child)
    return [start]


def describe_edges(graph: Graph, edges: list[tuple[str, str]]) -> str:
    lines = []
    for a, b in edges:
        places = ", ".join(imp.where() for imp in graph[a][b])
        lines.append(f"    {a} -> {b}  ({places})")
    return "\n".join(lines)


def is_shim(path: Path) -> bool:
    with path.open() as f:
        return f.readline().startswith(SHIM_MARK)


def test_imports_form_no_cycle():
    graph = build_graph(package_modules(), all_imports())
    components = strongly_connected(graph)
    report = []
    for members in components:
        cycle = shortest_cycle(graph, members[0], set(members))
        inside = [(a, b) for a in members for b in sorted(graph[a]) if b in members]
        report.append(
            f"  cycle among {len(members)} modules: {', '.join(members)}\n"
            f"  e.g. {' -> '.join(cycle)}; every import inside it:\n"
            + describe_edges(graph, inside)
        )
    shims = sorted(name for name, path in package_modules().items() if is_shim(path))
    note = f"\n(transition shims, counted like any module: {', '.join(shims)})" if shims else ""
    assert not components, (
        f"rlviz/, agents/ and envs/ have {len(components)} import cycle(s); imports must flow one way "
        "(see shared/DESIGN.md, Layout). Break each by moving the shared piece down a layer:\n"
        + "\n".join(report)
        + note
    )


def test_no_import_runs_up_the_layers():
    known = package_modules()
    offending = sorted(
        (
            imp
            for imp in all_imports()
            if imp.target in known and layer_of(imp.target) > layer_of(imp.source)
        ),
        key=lambda imp: (imp.path, imp.line),
    )
    lines = [
        f"  {imp.where()}: {imp.source} ({LAYERS[layer_of(imp.source)]}) imports {imp.target} "
        f"({LAYERS[layer_of(imp.target)]})"
        for imp in offending
    ]
    assert not offending, (
        f"{len(offending)} import(s) run up the layers {' < '.join(LAYERS)}; the engine gets what "
        "it needs from the env's info or from its caller, the application never calls the CLI:\n"
        + "\n".join(lines)
    )


def test_nothing_imports_the_bare_names_envs_or_agents():
    offending = sorted(
        (imp for imp in all_imports() if imp.target.split(".")[0] in BARE_NAMES),
        key=lambda imp: (imp.path, imp.line),
    )
    lines = [f"  {imp.where()}: {imp.source} imports {imp.target}" for imp in offending]
    assert not offending, (
        f"{len(offending)} import(s) of the bare names envs/agents, which may be a user's own "
        "packages; write rlviz.envs / rlviz.agents:\n" + "\n".join(lines)
    )


def test_import_rlviz_loads_no_env_agent_or_sb3_code():
    script = textwrap.dedent(
        f"""
        import sys
        import rlviz
        names = {{n for m in sys.modules for n in (m.split('.')[0], '.'.join(m.split('.')[:2]))}}
        loaded = sorted(names & set({FORBIDDEN_AT_IMPORT!r}))
        print(','.join(loaded))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    loaded = result.stdout.strip()
    assert not loaded, (
        f"`import rlviz` loaded {loaded}; import them inside the functions that use them"
    )


# The checker itself, on tiny trees with known answers.


def _tree(tmp_path: Path, files: dict[str, str]) -> dict[str, Path]:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return {
        ".".join(p.relative_to(tmp_path).with_suffix("").parts).removesuffix(".__init__"): p
        for p in sorted(tmp_path.rglob("*.py"))
    }


def test_checker_resolves_relative_lazy_and_type_checking_imports(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    known = _tree(
        tmp_path,
        {
            "pkg/__init__.py": "from .a import x\n",
            "pkg/a.py": """
                from typing import TYPE_CHECKING
                if TYPE_CHECKING:
                    from pkg.sub import b
                def f():
                    from ..pkg.sub.b import y
                    import importlib
                    importlib.import_module("envs")
                """,
            "pkg/sub/__init__.py": "from . import b\n",
            "pkg/sub/b.py": "from .. import a\nimport agents.train\n",
        },
    )
    edges = {(i.source, i.target) for p in known.values() for i in imports_of(p, known)}
    assert {
        ("pkg", "pkg.a"),
        ("pkg.a", "pkg.sub.b"),
        ("pkg.a", "envs"),
        ("pkg.sub", "pkg.sub.b"),
        ("pkg.sub.b", "pkg.a"),
        ("pkg.sub.b", "agents.train"),
    } <= edges
    graph = build_graph(known, [i for p in known.values() for i in imports_of(p, known)])
    assert strongly_connected(graph) == [["pkg.a", "pkg.sub.b"]]
    assert shortest_cycle(graph, "pkg.a", {"pkg.a", "pkg.sub.b"}) == ["pkg.a", "pkg.sub.b", "pkg.a"]
