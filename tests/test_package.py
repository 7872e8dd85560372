"""The package's shape: imports between subpackages point one way (imports inside functions count too)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "o1_embedder"


def _node(module: str) -> str:
    """``o1_embedder.model.loading`` -> ``model``; ``o1_embedder.cli`` -> ``cli``; ``o1_embedder`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(relative.parts[:-1] if relative.name == "__init__" else relative.parts)
        package = module if relative.name == "__init__" else module.rsplit(".", 1)[0]
        source = _node(module)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    targets = [".".join(base + ([node.module] if node.module else []))]
                else:
                    targets = [node.module or ""]
            for target in targets:
                if target == "o1_embedder" or target.startswith("o1_embedder."):
                    destination = _node(target)
                    if destination != source:
                        graph.setdefault(source, set()).add(destination)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if state.get(nxt) is None and (found := visit(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if state.get(node) is None and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_between_subpackages():
    graph = import_graph()
    assert "model" in graph and "generation" in graph["model"]  # the parser sees real edges
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_concepts_do_not_import_their_users():
    graph = import_graph()
    assert not graph.get("data", set()) - {"files"}  # file I/O only
    assert "training" not in graph.get("model", set()) and "synthesis" not in graph.get("generation", set())


def test_thinking_overrides_are_one_set_of_options_for_eval_serve_and_think():
    from o1_embedder.cli import build_parser
    from o1_embedder.evaluation.job import EvalSettings
    from o1_embedder.model.overrides import ThinkingOverrides, ThinkSettings
    from o1_embedder.options import dataclass_from_args
    from o1_embedder.serving.cli import settings_from_args

    flags = ["--greedy", "--num-thoughts", "2", "--max-new-tokens", "5", "--query-weight", "0.25"]
    parser = build_parser()
    parsed = [dataclass_from_args(EvalSettings, parser.parse_args(["eval", "cranfield", *flags])),
              settings_from_args(parser.parse_args(["serve", "m", "--api-key", "k", *flags])),
              dataclass_from_args(ThinkSettings, parser.parse_args(["think", "q", *flags]))]
    expected = ThinkingOverrides(num_thoughts=2, max_new_tokens=5, greedy=True, query_weight=0.25).overrides()
    assert all(isinstance(s, ThinkingOverrides) and s.overrides() == expected for s in parsed)
    unset = [dataclass_from_args(EvalSettings, parser.parse_args(["eval", "cranfield"])),
             dataclass_from_args(ThinkSettings, parser.parse_args(["think", "q"]))]
    assert all(s.overrides() == dict.fromkeys(expected) for s in unset)  # None: the model's own settings
    for bad in ({"query_weight": 1.5}, {"num_thoughts": 0}, {"greedy": "yes"}):
        with pytest.raises((ValueError, TypeError), match=next(iter(bad))):
            ThinkSettings(queries=["q"], **bad)
