"""No function of the package or its methods is over :data:`LIMIT` lines, measured with ``ast``
from its ``def`` line to its last line (docstring and comments included, decorators not)."""

from __future__ import annotations

import ast
from pathlib import Path

import kdbench

LIMIT = 80
ROOT = Path(kdbench.__file__).parent.parent
PACKAGES = ("kdbench", "methods")


def lengths(source: str, name: str) -> list[tuple[str, int]]:
    """``(qualified name, lines)`` of every function and method in ``source``, nested included."""
    out = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                qualified = f"{prefix}.{child.name}" if prefix else child.name
                if not isinstance(child, ast.ClassDef):
                    out.append((qualified, child.end_lineno - child.lineno + 1))
                visit(child, qualified)
            else:
                visit(child, prefix)

    visit(ast.parse(source, name), "")
    return out


def too_long(root: Path) -> list[str]:
    """``module.function: N lines`` for every function over :data:`LIMIT` lines, longest first
    (then by name)."""
    found = [
        (lines, f"{path.relative_to(root).with_suffix('').as_posix().replace('/', '.')}:"
                f"{qualified}: {lines} lines")
        for package in PACKAGES
        for path in sorted((root / package).rglob("*.py"))
        for qualified, lines in lengths(path.read_text(), path.name)
        if lines > LIMIT
    ]
    return [text for _, text in sorted(found, key=lambda item: (-item[0], item[1]))]


def test_no_function_is_over_the_limit() -> None:
    assert len(list((ROOT / "kdbench").rglob("*.py"))) > 50  # the walk found the package
    assert too_long(ROOT) == []


def test_the_measure_counts_from_def_to_last_line_nested_and_methods_included(
    tmp_path: Path,
) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(LIMIT - 1))  # def line + 79 = 80 lines
    source = (
        f"def fits():\n{body}\n\n"
        f"def over():\n{body}\n    return x0\n\n"
        "class Model:\n"
        "    @property\n"
        f"    def method(self):\n        def inner():\n{body.replace('    ', '            ')}\n"
        "            return 1\n"
        "        return inner\n"
    )
    (tmp_path / "kdbench").mkdir()
    (tmp_path / "methods").mkdir()
    (tmp_path / "kdbench" / "module.py").write_text(source)
    assert dict(lengths(source, "m"))["fits"] == LIMIT
    assert too_long(tmp_path) == [
        f"kdbench.module:Model.method: {LIMIT + 3} lines",
        f"kdbench.module:Model.method.inner: {LIMIT + 1} lines",
        f"kdbench.module:over: {LIMIT + 1} lines",
    ]
