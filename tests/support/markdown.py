"""The project's documentation as the tests read it: its Markdown files, their code blocks, links and headings."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from server.process import REPO_ROOT

#: Folders that hold no documentation: environments, caches, builds and what runs write.
NOT_DOCUMENTATION = frozenset(
    {".venv", "mutants", "build", "dist", "node_modules", "reports", "bench-results", "test-artifacts"}
)
#: The line right before a block's opening fence that marks it runnable (see tests/live/test_readme_blocks.py).
MARKER = re.compile(r"<!-- runnable(?: with: (?P<setup>.+?))? -->")
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,})(?P<info>[^`]*)$")
HEADING = re.compile(r"^(?P<level>#{1,6}) +(?P<text>.+?) *#*$")
INLINE_LINK = re.compile(r"(?<!!)\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)\)")
INLINE_CODE = re.compile(r"`+[^`]*`+")


@dataclass(frozen=True)
class CodeBlock:
    path: Path
    #: The line of the opening fence, counted from 1.
    line: int
    language: str
    text: str
    #: The marker's line, when the block is marked runnable.
    marker: str | None
    #: What runs before the block, from ``<!-- runnable with: ... -->``.
    setup: str | None

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(REPO_ROOT)}:{self.line}"


def documentation_files() -> list[Path]:
    """Every Markdown file of the repository, the environments and what runs write left out."""
    found = []
    for path in REPO_ROOT.rglob("*.md"):
        parts = path.relative_to(REPO_ROOT).parts
        if not any(part.startswith(".") or part in NOT_DOCUMENTATION for part in parts):
            found.append(path)
    return sorted(found)


def code_blocks(path: Path) -> list[CodeBlock]:
    """The fenced code blocks of ``path``, each with its marker if the line before its fence is one."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        body = []
        end = index + 1
        while end < len(lines) and lines[end].strip() != fence:
            body.append(lines[end][indent:] if lines[end][:indent].strip() == "" else lines[end])
            end += 1
        previous = lines[index - 1].strip() if index > 0 else ""
        marker = MARKER.fullmatch(previous)
        blocks.append(
            CodeBlock(
                path=path,
                line=index + 1,
                language=opening["info"].strip().split(" ")[0],
                text="\n".join(body) + "\n",
                marker=previous if marker else None,
                setup=marker["setup"] if marker else None,
            )
        )
        index = end + 1
    return blocks


def prose_lines(path: Path) -> Iterator[tuple[int, str]]:
    """The lines of ``path`` outside its code blocks, numbered from 1."""
    inside: str | None = None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fence = FENCE.match(line)
        if inside is None and fence is not None:
            inside = fence["fence"]
        elif inside is not None and line.strip() == inside:
            inside = None
        elif inside is None:
            yield number, line


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = INLINE_LINK.sub(lambda link: link["text"], heading).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of every heading of ``path``, a repeated heading's numbered as GitHub numbers them."""
    seen: Counter[str] = Counter()
    found = set()
    for _, line in prose_lines(path):
        heading = HEADING.match(line)
        if heading is None:
            continue
        base = slug(heading["text"])
        found.add(base if seen[base] == 0 else f"{base}-{seen[base]}")
        seen[base] += 1
    return found


def links(path: Path) -> Iterator[tuple[int, str]]:
    """Every inline link's target in the prose of ``path`` (inline code left out), with the line it starts on.

    A link's text may run over a line break, as a wrapped paragraph has it.
    """
    total = len(path.read_text(encoding="utf-8").splitlines())
    lines = [""] * total
    for number, line in prose_lines(path):
        lines[number - 1] = INLINE_CODE.sub("", line)
    prose = "\n".join(lines)
    for link in INLINE_LINK.finditer(prose):
        yield prose.count("\n", 0, link.start()) + 1, link["target"]
