"""The repository is whole: its licence is the one pyproject names, and no text points at a missing file."""

from __future__ import annotations

import fnmatch
import os
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_SKIPPED = {".git", ".venv", ".tools", ".mypy_cache", ".ruff_cache", ".pytest_cache", "node_modules"}
_LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
_NAMED_FILE = re.compile(r"`([\w.-][\w./-]*\.(?:md|yaml|yml|json|toml|env|example|service))`")
_MENTIONED_DOC = re.compile(r"\b([\w-]+\.md)\b")


def _files(pattern: str) -> list[Path]:
    found: list[Path] = []
    for directory, subdirectories, names in os.walk(ROOT):
        subdirectories[:] = [name for name in subdirectories if name not in _SKIPPED]  # not walked at all
        found += [Path(directory, name) for name in fnmatch.filter(names, pattern)]
    return found


def _exists(name: str, near: Path) -> bool:
    """A path relative to the citing file or to the root, or a file name found anywhere in the repository."""
    if (near.parent / name).exists() or (ROOT / name).exists():
        return True
    return "/" not in name and any(path.name == name for path in _files(name))


def test_the_licence_file_is_the_licence_pyproject_names() -> None:
    """LICENSE exists and is the MIT licence that pyproject.toml declares."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    assert declared == "MIT"
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
    assert "Permission is hereby granted, free of charge" in text


def test_markdown_links_and_named_files_exist() -> None:
    """Every relative link and every file named in backquotes in the Markdown documents exists."""
    missing = []
    for document in _files("*.md"):
        text = document.read_text()
        for target in _LINK.findall(text):
            if not re.match(r"[a-z]+:", target) and not (document.parent / target).exists():
                missing.append(f"{document.relative_to(ROOT)} links {target}")
        for name in _NAMED_FILE.findall(text):
            if not _exists(name, document):
                missing.append(f"{document.relative_to(ROOT)} names {name}")
    assert not missing, "\n".join(missing)


def test_source_comments_cite_only_documents_in_the_repository() -> None:
    """A .md file cited in the code or the tests is one the repository has."""
    documents = {path.name for path in _files("*.md")}
    missing = [
        f"{source.relative_to(ROOT)} cites {name}"
        for source in _files("*.py")
        for name in _MENTIONED_DOC.findall(source.read_text())
        if name not in documents
    ]
    assert not missing, "\n".join(missing)


def test_both_readmes_say_the_same_about_hash_threads_in_containers() -> None:
    """README.md and deploy/README.md carry the same paragraph on sizing hash threads by cgroup quota."""
    paragraphs = [
        {" ".join(block.split()) for block in (ROOT / name).read_text().split("\n\n")}
        for name in ("README.md", "deploy/README.md")
    ]
    shared = [p for p in paragraphs[0] & paragraphs[1] if "cpu.max" in p and "cpu.cfs_quota_us" in p]
    assert shared, "the cgroup sizing paragraph differs between README.md and deploy/README.md"
