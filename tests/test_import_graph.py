"""Imports run one way, from the CLI down: no module of the package imports, even lazily
inside a function, a module that imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

import retrain

PACKAGE = Path(retrain.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.add(node.module)
                targets |= {f"{node.module}.{alias.name}" for alias in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                found.append(trail[trail.index(target):] + [target])
            elif target not in state:
                visit(target, trail + [target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_the_package_has_no_import_circles():
    graph = import_graph()
    assert "retrain.predict.prediction" in graph and "retrain.predict.tflite_model" in graph["retrain.predict.prediction"]
    assert cycles(graph) == []


def test_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


# The package's layers in data-flow order. A module may import its own layer and the
# layers before it, never one after. The modules at the package's root (errors, paths, reporter,
# metrics, native logs, worker threads, output checks, the JSON writer) are the foundation every layer may use.
LAYERS = ("data", "backbones", "features", "train", "decisions", "patient", "card", "export", "predict", "evaluate", "api", "cli")


def layer_of(module: str) -> int:
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS):
        return LAYERS.index(parts[1]) + 1
    return 0


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((source, target) for source, targets in graph.items() for target in targets
                  if layer_of(target) > layer_of(source))


def test_every_module_sits_in_a_layer_folder_or_is_a_foundation():
    roots = {name for name in import_graph() if layer_of(name) == 0}
    assert roots == {"retrain", "retrain.errors", "retrain.paths", "retrain.metrics", "retrain.native_logs", "retrain.reporter",
                     "retrain.workers", "retrain.outputs", "retrain.json_text"}


def test_no_layer_imports_a_later_layer():
    assert upward_imports(import_graph()) == []


def test_layer_check_finds_an_upward_import():
    graph = {"retrain.data.images": {"retrain.cli.console"}, "retrain.cli.console": {"retrain.data.images"}}
    assert upward_imports(graph) == [("retrain.data.images", "retrain.cli.console")]
