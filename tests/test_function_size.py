"""Functions a reader can see whole: none in the project's packages runs over 60 lines."""

from __future__ import annotations

import ast

from tests.test_layers import modules

MAX_LINES = 60


def long_functions(limit: int = MAX_LINES) -> dict[str, int]:
    """Every function or method over limit lines (decorators and docstring included), by
    module:qualified name."""
    found = {}
    for name, path in modules().items():
        todo = [(node, "") for node in ast.parse(path.read_text(), str(path)).body]
        while todo:
            node, prefix = todo.pop()
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                if node.end_lineno - start + 1 > limit:
                    found[f"{name}:{prefix}{node.name}"] = node.end_lineno - start + 1
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                prefix = f"{prefix}{node.name}."
            todo += [(child, prefix) for child in ast.iter_child_nodes(node)]
    return found


def test_no_function_is_over_60_lines():
    assert long_functions() == {}


def test_the_count_sees_methods_and_nested_functions(tmp_path, monkeypatch):
    # Given a module with a 62-line method, and a 62-line function inside a 64-line one
    body = "".join(f"        x{i} = {i}\n" for i in range(61))
    src = tmp_path / "m.py"
    src.write_text(f"class A:\n    def long(self):\n{body}\n"
                   f"def outer():\n    def inner():\n{body}    return inner\n"
                   "def short():\n    return 1\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["modules"]), "modules",
                        lambda: {"facesense.m": src})
    # When the long functions are listed, Then each is, by its qualified name and length
    assert long_functions() == {"facesense.m:A.long": 62, "facesense.m:outer": 64,
                                "facesense.m:outer.inner": 62}
