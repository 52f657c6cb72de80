"""Print the shape of the code: modules per folder, the longest functions, the README's length.

Run it on any checkout (``python -m evaluation.shape``) to compare two versions
of the tree by the same measures. Duplicated blocks are counted by a separate
tool, outside the repository.
"""

from __future__ import annotations

import argparse
import ast
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

MEASURED_FOLDERS = ("server", "saga", "tests", "evaluation")


@dataclass(frozen=True, order=True)
class FunctionLength:
    lines: int
    name: str
    path: str
    first_line: int


def python_files(root: Path) -> list[Path]:
    return sorted(
        path for folder in MEASURED_FOLDERS for path in (root / folder).rglob("*.py") if "__pycache__" not in path.parts
    )


def modules_per_folder(root: Path) -> Counter[str]:
    return Counter(str(path.parent.relative_to(root)) for path in python_files(root))


def function_lengths(root: Path) -> list[FunctionLength]:
    lengths = []
    for path in python_files(root):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                lengths.append(
                    FunctionLength(
                        lines=node.end_lineno - node.lineno + 1,
                        name=node.name,
                        path=str(path.relative_to(root)),
                        first_line=node.lineno,
                    )
                )
    return sorted(lengths, reverse=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the checkout to measure")
    parser.add_argument("--longest", type=int, default=12, help="how many functions to list")
    arguments = parser.parse_args(argv)
    root: Path = arguments.root

    print("modules per folder:")
    for folder, count in sorted(modules_per_folder(root).items()):
        print(f"  {folder:<32} {count:>3}")
    print(f"\nlongest functions (of {MEASURED_FOLDERS}, tests excluded):")
    non_test = [f for f in function_lengths(root) if not f.path.startswith("tests/")]
    for function in non_test[: arguments.longest]:
        print(f"  {function.lines:>4} lines  {function.name}  {function.path}:{function.first_line}")
    readme = (root / "README.md").read_text(encoding="utf-8")
    print(f"\nREADME.md: {len(readme.splitlines())} lines")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
