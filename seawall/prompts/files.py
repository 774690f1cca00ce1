"""Prompts as files in git: one prompt per ``*.yaml``/``*.yml`` file, or per
``*.md`` file whose YAML front matter holds the fields and whose body is the
template. And back: the YAML a version is shown and diffed as.

Every file is read and validated (templates parsed too) before anything is
pushed, and every problem is reported at once with its file and field, so a
push from CI either stores the whole folder or nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from seawall.cli_common import walk_files
from seawall.prompts.errors import SpecError
from seawall.prompts.model import PromptSpec, spec_from_mapping
from seawall.prompts.render import compile_spec, environment

__all__ = ["PromptFile", "PromptFilesError", "SUFFIXES", "dump_yaml", "find_files",
           "load_file", "load_files"]

SUFFIXES = (".yaml", ".yml", ".md")


class PromptFilesError(ValueError):
    """One or more prompt files are invalid; ``problems`` has one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class PromptFile:
    path: Path
    name: str
    spec: PromptSpec


def _front_matter(text: str) -> tuple[str, str] | None:
    """(YAML, body) of a Markdown file that opens with a ``---`` block."""
    text = text.removeprefix("\ufeff")
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        return None
    for i in range(1, len(lines)):
        if lines[i].strip() == "---":
            return "".join(lines[1:i]), "".join(lines[i + 1:]).strip("\n")
    return None


def _yaml(text: str, path: Path) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise PromptFilesError([f"{path}: invalid YAML{where}: {problem}"]) from None


def load_file(path: Path) -> PromptFile:
    """Read and validate one prompt file (name defaults to the file's stem).
    Raises PromptFilesError naming the file and the field."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PromptFilesError([f"{path}: cannot read: {e}"]) from None
    if path.suffix.lower() == ".md":
        parts = _front_matter(text)
        if parts is None:
            raise PromptFilesError([f"{path}: a Markdown prompt opens with YAML front matter "
                                    "between two `---` lines; its body is the template"])
        data = _yaml(parts[0], path) or {}
        if isinstance(data, dict):
            for key in ("template", "messages"):
                if key in data:
                    raise PromptFilesError([f"{path}: {key}: not allowed in front matter; the "
                                            "body of a Markdown prompt is its template"])
            data["template"] = parts[1]
    else:
        data = _yaml(text, path)
    try:
        name, spec = spec_from_mapping(data, path.stem)
        compile_spec(spec, environment(), name)
    except SpecError as e:
        raise PromptFilesError([f"{path}: {e}"]) from None
    return PromptFile(path, name, spec)


def find_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Files named on the command line as they are; folders walked in name
    order for ``SUFFIXES``, skipping hidden entries and Markdown files without
    front matter (a README beside the prompts)."""
    roots = list(paths)
    named = {p for p in roots if p.is_file()}
    for path in walk_files(roots, SUFFIXES):
        if path in named or path.suffix.lower() != ".md" or _opens_with_front_matter(path):
            yield path


def _opens_with_front_matter(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8") as f:
            return f.readline().removeprefix("\ufeff").strip() == "---"
    except (OSError, UnicodeDecodeError):
        return True  # let load_file report it


def load_files(paths: Iterable[Path]) -> list[PromptFile]:
    """Every prompt under ``paths``, all validated; raises PromptFilesError
    listing every bad file (and names defined twice) if any."""
    problems: list[str] = []
    loaded: list[PromptFile] = []
    seen: dict[str, Path] = {}
    for path in find_files(paths):
        try:
            pf = load_file(path)
        except PromptFilesError as e:
            problems += e.problems
            continue
        if pf.name in seen:
            problems.append(f"{path}: name: {pf.name!r} is already defined by {seen[pf.name]}")
            continue
        seen[pf.name] = path
        loaded.append(pf)
    if problems:
        raise PromptFilesError(problems)
    return loaded


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as ``|`` blocks, so a template reads (and diffs) as text."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_yaml(document: dict[str, Any]) -> str:
    """A prompt's file form as YAML, fields in the order given."""
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                     default_flow_style=False, width=100)
