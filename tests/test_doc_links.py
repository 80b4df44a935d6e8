"""Every relative link in README.md and docs/*.md leads somewhere: to a file that exists and,
for a `#anchor` into a Markdown file, to one of its headings (GitHub's slug rule)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN = re.compile(r"(`+).*?\1")
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def _prose_lines(text: str):
    """(line number, line) outside fenced code blocks, code spans blanked."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, _CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lower-cased, every character but letters,
    digits, '_', '-' and spaces dropped, spaces turned to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings; a repeated slug gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else _HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every inline, image and reference link outside code."""
    found = []
    for number, line in _prose_lines(path.read_text(encoding="utf-8")):
        found += [(number, m.group(1)) for m in _INLINE_LINK.finditer(line)]
        reference = _REFERENCE.match(line)
        if reference:
            found.append((number, reference.group(1)))
    return found


def broken_links(paths) -> list[str]:
    """'file:line: target (why)' for every relative link that leads nowhere."""
    broken = []
    for path in paths:
        for number, target in links(path):
            if not target or _SCHEME.match(target) or target.startswith("//"):
                continue
            file_part, _, anchor = target.partition("#")
            destination = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.name}:{number}: {target}"
            if not destination.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
                broken.append(f"{where} (no heading #{anchor} in {destination.name})")
    return broken


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_relative_link_in_the_readme_and_docs_resolves():
    paths = documents()
    assert len(paths) > 1, "docs/*.md not found"
    assert broken_links(paths) == []


def test_the_checker_finds_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "other.md").write_text("# Fine-tuning the backbone: `--recipe finetune`\n\n## Seen twice\n\n## Seen twice\n")
    (tmp_path / "page.md").write_text(
        "# Page\n\n"
        "[fine](other.md#fine-tuning-the-backbone---recipe-finetune) [second](other.md#seen-twice-1) [self](#page)\n"
        "[gone](missing.md) and ![picture](img/none.png)\n"
        "[bad anchor](other.md#no-such-heading) [web](https://example.com/x.md)\n"
        "`[in code](nowhere.md)`\n"
        "```\n[in a block](nowhere.md)\n# not a heading\n```\n"
        "[ref]: also_missing.md\n"
    )
    assert broken_links([tmp_path / "page.md"]) == [
        "page.md:4: missing.md (no such file)",
        "page.md:4: img/none.png (no such file)",
        "page.md:5: other.md#no-such-heading (no heading #no-such-heading in other.md)",
        "page.md:11: also_missing.md (no such file)",
    ]


def test_slug_follows_github():
    assert slug("From scores to decisions") == "from-scores-to-decisions"
    assert slug("Patient metadata: age, sex, site") == "patient-metadata-age-sex-site"
    assert slug("Seeing why: heatmaps and the report") == "seeing-why-heatmaps-and-the-report"
    assert slug("label_image") == "label_image"
