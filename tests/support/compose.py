"""docker-compose.yml as Compose reads it, without a Docker engine.

The file is interpolated as Compose interpolates it (``${VAR:-default}``),
and each command of the project's image is resolved as the image resolves
it: its first word is a ``[project.scripts]`` entry point of pyproject.toml,
and the rest is read by that entry point's own argument parser, under the
container's environment.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import itertools
import os
import re
import shlex
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from server.process import REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
PYPROJECT = REPO_ROOT / "pyproject.toml"
#: ``${NAME}``, ``${NAME:-default}`` and the other braced forms Compose interpolates.
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")
#: The prefixes of the environment variables the entry points read.
ENVIRONMENT_PREFIXES = ("ACCOUNTS_", "SAGA_")


class ComposeError(AssertionError):
    """The file is not what Compose, or the image, would accept."""


def strings_in(value: Any) -> Iterator[str]:
    """Every string of a parsed YAML document, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from strings_in(key)
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def variables(document: Any) -> list[tuple[str, str, str]]:
    """Each interpolation in ``document``: its variable, its operator (``:-`` ...) and its operand."""
    found = []
    for text in strings_in(document):
        for match in VARIABLE.finditer(text):
            name, operator, operand = match.groups(default="")
            found.append((name, operator, operand))
    return found


def interpolate(value: Any, environment: Mapping[str, str]) -> Any:
    """``value`` as Compose reads it under ``environment``; only ``${VAR:-default}`` and ``$$`` are taken."""
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, operator, operand = match.groups(default="")
            if operator != ":-":
                raise ComposeError(f"{match.group(0)}: give every variable a default, as ${{{name}:-default}}")
            return environment.get(name) or operand

        text = VARIABLE.sub(substitute, value.replace("$$", "\0"))
        if "$" in text:
            raise ComposeError(f"{value!r}: a $ that Compose would read as a variable")
        return text.replace("\0", "$")
    if isinstance(value, Mapping):
        return {interpolate(key, environment): interpolate(item, environment) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, environment) for item in value]
    return value


def raw_document(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def load(path: Path = COMPOSE_FILE, environment: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The file as ``docker compose`` reads it with ``environment`` set (none: every default)."""
    document = interpolate(raw_document(path), environment or {})
    assert isinstance(document, dict)
    return document


def project_scripts() -> dict[str, str]:
    """``[project.scripts]`` of pyproject.toml: the commands the installed package puts on the image's PATH."""
    scripts = tomllib.loads(PYPROJECT.read_text(encoding="utf-8")).get("project", {}).get("scripts", {})
    assert isinstance(scripts, dict)
    return scripts


def command(service: Mapping[str, Any]) -> list[str]:
    value = service["command"]
    return shlex.split(value) if isinstance(value, str) else [str(word) for word in value]


def environment_of(service: Mapping[str, Any]) -> dict[str, str]:
    value = service.get("environment", {})
    if isinstance(value, list):
        return dict(item.split("=", 1) for item in value)
    return {str(name): str(item) for name, item in value.items()}


@dataclass(frozen=True)
class EntryPoint:
    script: str
    module: str
    function: str


def entry_point(script: str) -> EntryPoint:
    """The ``[project.scripts]`` entry ``script``, checked to name a function that exists."""
    scripts = project_scripts()
    if script not in scripts:
        raise ComposeError(f"{script!r} is not a [project.scripts] entry point of pyproject.toml: {sorted(scripts)}")
    module, _, function = scripts[script].partition(":")
    if not callable(getattr(importlib.import_module(module), function, None)):
        raise ComposeError(f"{script} = {scripts[script]!r} names no function")
    return EntryPoint(script, module, function)


@contextlib.contextmanager
def container_environment(environment: Mapping[str, str]) -> Iterator[None]:
    """The process environment as the container has it, for the variables the entry points read."""
    with pytest.MonkeyPatch.context() as patch:
        for name in os.environ:
            if name.startswith(ENVIRONMENT_PREFIXES):
                patch.delenv(name)
        for name, value in environment.items():
            patch.setenv(name, value)
        yield


def parse_command(service: Mapping[str, Any]) -> tuple[EntryPoint, argparse.Namespace]:
    """The service's command as its entry point reads it: by the module's own ``build_parser()``."""
    words = command(service)
    point = entry_point(words[0])
    module = importlib.import_module(point.module)
    errors = io.StringIO()
    with container_environment(environment_of(service)), contextlib.redirect_stderr(errors):
        try:
            args = module.build_parser().parse_args(words[1:])
        except SystemExit:
            raise ComposeError(f"{shlex.join(words)}: {errors.getvalue().strip()}") from None
        # argparse also takes an unambiguous prefix of a flag: a flag renamed to a longer name would still
        # parse. Each flag must be one that the (sub)command's own help lists in full.
        subcommands = list(itertools.takewhile(lambda word: not word.startswith("-"), words[1:]))
        usage = io.StringIO()
        with contextlib.redirect_stdout(usage), contextlib.suppress(SystemExit):
            module.build_parser().parse_args([*subcommands, "--help"])
    for word in words[1:]:
        flag = word.split("=", 1)[0]
        if flag.startswith("--") and not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", usage.getvalue()):
            raise ComposeError(
                f"{shlex.join(words)}: {flag} is not a flag of {shlex.join([point.script, *subcommands])}"
            )
    return point, args


@dataclass(frozen=True)
class BindMount:
    source: Path
    target: str
    read_only: bool


def bind_mounts(service: Mapping[str, Any]) -> dict[str, BindMount]:
    """The service's mounts of repository files (``./path:/target[:ro]``), by their path in the container."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target, *options = volume.split(":")
        if source.startswith("."):
            mounts[target] = BindMount((REPO_ROOT / source).resolve(), target, "ro" in options)
    return mounts


def args_of(services: Mapping[str, Any], name: str, script: str, subcommand: str | None = None) -> Any:
    """The parsed arguments of service ``name``'s command, checked to run ``script`` (and ``subcommand``)."""
    point, args = parse_command(services[name])
    assert point.script == script, name
    if subcommand is not None:
        assert args.command == subcommand, name
    return args
