"""The README is a front page and docs/ holds the rest (issue 24): every link resolves (files and
anchors), every setting of `Settings` is documented exactly once in docs/configuration.md's table and
nothing there is stale, and the README stays within its 300 lines."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.settings import Settings

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """The text outside code fences and inline code (a link there is an example, not a link)."""
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    counts: dict[str, int] = {}
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    for line in text.splitlines():
        if match := re.match(r"#{1,6} (.+)", line):
            base = slug(match.group(1))
            n = counts.get(base, 0)
            counts[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_resolves(page: Path) -> None:
    broken = []
    for match in LINK.finditer(prose(page.read_text())):
        target = match.group(1) or match.group(2)
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.name}")
    assert broken == []


def documented() -> list[str]:
    """Every variable named in the first column of docs/configuration.md's table rows."""
    names: list[str] = []
    for line in (ROOT / "docs" / "configuration.md").read_text().splitlines():
        if line.startswith("| `"):
            first = line.split("|")[1]
            names += re.findall(r"`((?:PIXAZO|AWS)_[A-Z0-9_]+)`", first)
    return names


def variables() -> set[str]:
    out = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        choices = getattr(alias, "choices", None)
        out.add(str(choices[0]) if choices else f"PIXAZO_{name.upper()}")
    return out


def test_every_setting_is_documented_once_and_none_is_stale() -> None:
    names = documented()
    duplicated = {n for n in names if names.count(n) > 1}
    assert duplicated == set()
    assert variables() - set(names) == set()  # missing
    assert set(names) - variables() - {"PIXAZO_SECRETS_DIR"} == set()  # stale (SECRETS_DIR is read before Settings)


def test_the_readme_is_a_front_page() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    for page in ("configuration", "operators", "oauth", "replicas", "catalogue", "gallery", "benchmarks",
                 "development", "tools", "uploads"):
        assert f"docs/{page}.md" in text, page
