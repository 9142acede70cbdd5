"""The import floors, read from the source (every import statement, function-local ones
included): envs/ sits at the bottom and imports only itself and seqrl's error types; seqrl/
(the framework) never imports an agent: agents are resolved by name, in one place
(``seqrl.config.AGENTS``, through importlib). A new upward import fails this test.

``KNOWN`` lists the upward imports that remain (issue 17 moves Meta-DT's acting from
seqrl/meta_eval.py into agents/); it may only shrink: an entry that no longer occurs fails
too, so the list stays the truth."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the installed package maps seqrl.agents -> agents/, seqrl.envs -> envs/ (pyproject.toml)
TREES = {"seqrl": ROOT / "seqrl", "seqrl.agents": ROOT / "agents", "seqrl.envs": ROOT / "envs"}
ENVS_MAY_IMPORT = ("seqrl.envs", "seqrl.errors")
KNOWN = {
    ("seqrl.meta_eval", "seqrl.agents.dt"),
    ("seqrl.meta_eval", "seqrl.agents.meta_dt"),
    ("seqrl.meta_eval", "seqrl.agents.world_model"),
}


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


def test_the_parser_sees_function_local_and_relative_imports():
    imports = _imports("seqrl.meta_eval", MODULES["seqrl.meta_eval"])
    assert "seqrl.agents.world_model" in imports  # imported inside a function today
    assert {"seqrl.errors"} <= _imports("seqrl.envs.registry", MODULES["seqrl.envs.registry"])
    assert len(MODULES) > 50 and "seqrl.agents.ppo" in MODULES and "seqrl.envs.core" in MODULES


def test_envs_and_the_framework_never_import_upward():
    found = _upward()
    assert found <= KNOWN, f"new upward imports: {sorted(found - KNOWN)}"
    assert found >= KNOWN, f"gone, so drop them from KNOWN: {sorted(KNOWN - found)}"
