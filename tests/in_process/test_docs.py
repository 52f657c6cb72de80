"""The documentation holds together: every relative link and #anchor leads somewhere, the map of the repository
names paths that exist, the README stays short, and runnable blocks are marked as
tests/live/test_readme_blocks.py runs them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from server.process import REPO_ROOT
from tests.support.markdown import (
    MARKER,
    anchors,
    code_blocks,
    documentation_files,
    links,
    prose_lines,
    slug,
)

README = REPO_ROOT / "README.md"
#: The READMEs beside the code they describe, which README.md sends a reader to.
READMES = [
    README,
    REPO_ROOT / "server" / "README.md",
    REPO_ROOT / "saga" / "README.md",
    REPO_ROOT / "openapi" / "README.md",
    REPO_ROOT / "evaluation" / "README.md",
    REPO_ROOT / "saga" / "simulation" / "README.md",
]
#: A README a newcomer reads in ten minutes.
README_MAX_LINES = 300
RUNNABLE_LANGUAGES = {"sh", "bash", "python"}
#: One entry of the repository's map: the tree drawing, then the path, then what it is.
TREE_ENTRY = re.compile(r"^(?P<prefix>(?:│   |    )*)(?:├── |└── )(?P<name>\S+)")


def broken_links(path: Path, root: Path = REPO_ROOT) -> list[str]:
    """Each relative link of ``path`` whose file, folder or heading does not exist, with its line."""
    broken = []
    for line, target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # a URL of another site, or mailto:
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(root)}:{line}: {target}"
        if not destination.exists():
            broken.append(f"{where}: no such file or folder")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{where}: no heading with this anchor in {destination.name}")
        elif anchor and destination.suffix != ".md":
            broken.append(f"{where}: an anchor into a file that is not Markdown")
    return broken


def test_the_readmes_beside_the_code_exist_and_are_documentation() -> None:
    files = documentation_files()
    assert set(READMES) <= set(files)


@pytest.mark.parametrize("path", documentation_files(), ids=lambda path: str(path.relative_to(REPO_ROOT)))
def test_every_relative_link_and_anchor_resolves(path: Path) -> None:
    assert broken_links(path) == []


def test_the_readme_links_to_every_readme_beside_the_code() -> None:
    targets = {(README.parent / target.partition("#")[0]).resolve() for _, target in links(README)}
    assert set(READMES) - {README} <= targets


def test_a_broken_link_or_anchor_is_found(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# Top\n\n## Layers\n", encoding="utf-8")
    page = tmp_path / "saga" / "page.md"
    page.parent.mkdir()
    page.write_text(
        "# A page\n\n## Its `second` heading\n\n"
        "[fine](#its-second-heading) [fine](../README.md#layers) [elsewhere](https://example.org/x#y)\n"
        "[no file](missing.md) [no heading](#nowhere) [no heading there](../README.md#nowhere)\n"
        "`[in code](missing.md)` and a [wrapped\nlink](gone.md)\n\n```sh\n[in a block](missing.md)\n```\n",
        encoding="utf-8",
    )
    assert broken_links(page, root=tmp_path) == [
        "saga/page.md:6: missing.md: no such file or folder",
        "saga/page.md:6: #nowhere: no heading with this anchor in page.md",
        "saga/page.md:6: ../README.md#nowhere: no heading with this anchor in README.md",
        "saga/page.md:7: gone.md: no such file or folder",
    ]


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("12. Operating it", "12-operating-it"),
        ("What reads cost (2026-12-03, 2-core x86_64)", "what-reads-cost-2026-12-03-2-core-x86_64"),
        ("An operator's reads", "an-operators-reads"),
        ("The `transaction_id` header", "the-transaction_id-header"),
        ("Layers: what may import what", "layers-what-may-import-what"),
    ],
)
def test_anchors_are_made_as_github_makes_them(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


def test_the_readme_reads_in_ten_minutes() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail beside the code it describes"


def repository_map() -> list[str]:
    """The paths README.md's map of the repository names, each from the repository's root."""
    section = README.read_text(encoding="utf-8").split("\n## The repository\n", 1)[1]
    drawing = section.split("```text\n", 1)[1].split("```", 1)[0]
    paths: list[str] = []
    parents: list[str] = []
    for line in drawing.splitlines():
        entry = TREE_ENTRY.match(line)
        if entry is None:
            continue
        depth = len(entry["prefix"]) // 4
        del parents[depth:]
        path = "/".join([*parents, entry["name"].rstrip("/")])
        paths.append(path)
        if entry["name"].endswith("/"):
            parents.append(entry["name"].rstrip("/"))
    return paths


def test_the_repository_map_names_only_paths_that_exist() -> None:
    paths = repository_map()
    assert len(paths) >= 30
    assert {"server/ledger.py", "saga/workflow.py", "saga/logs", "saga/service", "server/stores"} <= set(paths)
    missing = [path for path in paths if not (REPO_ROOT / path).exists()]
    assert missing == []


@pytest.mark.parametrize("path", documentation_files(), ids=lambda path: str(path.relative_to(REPO_ROOT)))
def test_every_marker_stands_right_before_a_shell_or_python_block(path: Path) -> None:
    marked_lines = {block.line - 1 for block in code_blocks(path) if block.marker is not None}
    stray = [number for number, line in prose_lines(path) if MARKER.fullmatch(line.strip())]
    assert sorted(set(stray) - marked_lines) == [], "a marker not followed by a code block"
    for block in code_blocks(path):
        if block.marker is not None:
            assert block.language in RUNNABLE_LANGUAGES, f"{block.name}: only shell and Python blocks run"


def test_every_block_of_the_quick_tour_is_marked_runnable() -> None:
    tour_start = next(number for number, line in prose_lines(README) if line == "## A quick tour")
    tour_end = next(number for number, line in prose_lines(README) if number > tour_start and line.startswith("## "))
    tour = [block for block in code_blocks(README) if tour_start < block.line < tour_end]
    assert len(tour) >= 3
    unmarked = [block.name for block in tour if block.language in RUNNABLE_LANGUAGES and block.marker is None]
    assert unmarked == []


def layers() -> tuple[set[str], set[str]]:
    """What saga/README.md's "Layers" section places in the core, and in the operating layer."""
    section = (REPO_ROOT / "saga" / "README.md").read_text(encoding="utf-8").split("\n## Layers\n", 1)[1]
    core, operating = section.split("\n**The core**", 1)[1].split("\n**The operating layer**", 1)
    operating = operating.split("\nWhat each may import:\n", 1)[0]
    named = re.compile(r"`([a-z_]+\.py|[a-z_]+/)`")
    return set(named.findall(core)), set(named.findall(operating))


def test_the_layers_place_every_module_of_the_saga_and_only_modules_that_exist() -> None:
    saga = REPO_ROOT / "saga"
    modules = {path.name for path in saga.glob("*.py") if path.name not in {"__init__.py", "__main__.py"}}
    core, operating = layers()
    assert core == modules | {"logs/", "simulation/"}
    subpackages = {f"{path.parent.name}/" for path in saga.glob("*/__init__.py")} - {"logs/", "simulation/"}
    assert subpackages == {"cli/", "service/", "drive/", "telemetry/"}
    operating_modules = {
        path.name for package in ("cli", "drive", "telemetry") for path in (saga / package).glob("*.py")
    } - {"__init__.py"}
    assert operating == subpackages | operating_modules
