"""The import floors, read from the source (every import statement, function-local ones
included): envs/ sits at the bottom and imports only itself and seqrl's error types; seqrl/
(the framework) never imports an agent: agents are resolved by name, in one place
(``seqrl.config.AGENTS``, through importlib). A new upward import fails this test, and so
does an import cycle between any two modules."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the installed package maps seqrl.agents -> agents/, seqrl.envs -> envs/ (pyproject.toml)
TREES = {"seqrl": ROOT / "seqrl", "seqrl.agents": ROOT / "agents", "seqrl.envs": ROOT / "envs"}
ENVS_MAY_IMPORT = ("seqrl.envs", "seqrl.errors")


def _modules():
    for package, folder in TREES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join((package, *parts)), path


def _imports(module: str, path: Path) -> set[str]:
    """Every module ``path`` imports, relative imports resolved, ``from a import b`` as a.b
    when a.b is a module of the tree and as a otherwise."""
    names = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for a in node.names:
                names.add(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base)
    return {"seqrl." + n if n.startswith("agents.") else n for n in names}


MODULES = dict(_modules())


def _upward() -> set[tuple[str, str]]:
    found = set()
    for module, path in MODULES.items():
        for name in _imports(module, path):
            if module.startswith("seqrl.envs"):
                if name.startswith("seqrl") and not name.startswith(ENVS_MAY_IMPORT):
                    found.add((module, name))
            elif not module.startswith("seqrl.agents") and name.startswith("seqrl.agents"):
                found.add((module, name))
    return found


def _components(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node of ``graph`` (Tarjan): its
    cycles."""
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
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def _cycles() -> list[list[str]]:
    graph = {m: {n for n in _imports(m, p) if n in MODULES and n != m} for m, p in MODULES.items()}
    return _components(graph)


def test_the_parser_sees_function_local_and_relative_imports():
    imports = _imports("seqrl.meta_eval", MODULES["seqrl.meta_eval"])
    assert "seqrl.runs" in imports  # imported inside a function
    assert {"seqrl.errors"} <= _imports("seqrl.envs.registry", MODULES["seqrl.envs.registry"])
    assert len(MODULES) > 50 and "seqrl.agents.ppo" in MODULES and "seqrl.envs.core" in MODULES


def test_envs_and_the_framework_never_import_upward():
    assert not _upward(), f"upward imports: {sorted(_upward())}"


def test_there_is_no_import_cycle():
    assert not _cycles(), f"import cycles: {_cycles()}"
    # the check itself: two modules importing each other (through a third) are one cycle
    fake = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _components(fake) == [["a", "b", "c"]]


MAX_FUNCTION_LINES = 80


def test_functions_are_short():
    """No function (nested ones counted inside their parent) in the framework, the agents, the
    envs or the benchmarks runs over MAX_FUNCTION_LINES lines: long ones get named phases."""
    long = []
    for folder in (*TREES.values(), ROOT / "benchmarks"):
        for path in sorted(folder.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} {lines}")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"
