"""The shape of the code: tinyscale's modules import each other without a circle, every
import names something that exists, imports stand at the top of their module (inside a
function only for an optional heavy dependency, with its reason on the line), and
nothing in tinyscale reaches into analysis, bench or sweeps (the command line's dispatch
to `analysis` aside). Read from the source with `ast`: module-level and in-function
imports alike, nothing is run."""

from __future__ import annotations

import ast
import importlib
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("tinyscale", "analysis")
# The optional heavy dependencies a function may import where it needs them: each is an
# extra of pyproject.toml or slow to import, and the line says why (a `#` comment).
OPTIONAL = {"tensorflow_datasets", "torch", "transformers", "gguf", "tokenizers", "mauve",
            "sklearn", "wandb", "google", "linkgrammar", "openai", "faiss", "safetensors",
            "huggingface_hub", "yaml", "gcsfs", "pandas"}


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _imports(path: pathlib.Path):
    """(node, at module top, the modules of ours it depends on) for every import."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from pkg import sub` depends on pkg.sub, `from mod import name` on mod
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES
                     else node.module for a in node.names]
        else:
            continue
        yield node, id(node) in top, sorted({n for n in names if n in MODULES})


def _graph() -> dict[str, set[str]]:
    return {module: {dep for _, _, deps in _imports(path) for dep in deps if dep != module}
            for module, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle():
    assert _cycles(_graph()) == []


# The packages of tinyscale as layers (docs/architecture.md): each imports only the ones
# before it; the modules beside the layers (errors, storage, parallel, process) any.
LAYERS = ("config", "model", "data", "train", "interop", "evals", "launch", "cli")


def _layer(module: str) -> int | None:
    part = module.split(".")[1] if module.count(".") else None
    return LAYERS.index(part) if part in LAYERS else None


def test_no_layer_imports_one_above_it():
    up = [f"{module} imports {dep}" for module, deps in _graph().items()
          if module.startswith("tinyscale.") and _layer(module) is not None
          for dep in deps if dep.startswith("tinyscale.") and _layer(dep) is not None
          and _layer(dep) > _layer(module)]
    assert up == []


def test_the_layer_check_sees_an_upward_import():
    assert _layer("tinyscale.data.quality") < _layer("tinyscale.evals.run")
    assert _layer("tinyscale.errors") is None and _layer("tinyscale.cli") == len(LAYERS) - 1


def test_tinyscale_does_not_import_analysis_bench_or_sweeps():
    wrong = []
    for module, path in MODULES.items():
        if not module.startswith("tinyscale"):
            continue
        for node, _, _ in _imports(path):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) \
                else [node.module]
            for name in names:
                if name.split(".")[0] in ("analysis", "bench", "sweeps", "tests") and not (
                        module == "tinyscale.cli" and name.startswith("analysis")):
                    wrong.append(f"{module}:{node.lineno} imports {name}")
    assert wrong == []


def test_imports_stand_at_the_top():
    """Inside a function only an optional heavy dependency, with its reason."""
    lines = {}
    wrong = []
    for module, path in MODULES.items():
        source = lines[module] = path.read_text().splitlines()
        for node, at_top, _ in _imports(path):
            if at_top:
                continue
            name = node.names[0].name if isinstance(node, ast.Import) else node.module
            line = source[node.lineno - 1]
            lazy_ok = name.split(".")[0] in OPTIONAL or (
                module == "tinyscale.cli" and name.startswith("analysis"))  # its dispatch
            if not lazy_ok or "#" not in line:
                wrong.append(f"{module}:{node.lineno}: {line.strip()}")
    assert wrong == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_import_of_ours_names_something_that_exists(module):
    """An import inside a function is not run until the function is: one of a removed
    name would fail only then, in a user's hands."""
    for node, _, _ in _imports(MODULES[module]):
        if isinstance(node, ast.ImportFrom) and node.module.split(".")[0] in PACKAGES:
            target = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(target, alias.name) or f"{node.module}.{alias.name}" in \
                    MODULES, f"{module}:{node.lineno}: {node.module} has no {alias.name}"
