"""The README is a short landing page, docs/ holds the rest, and every relative link between them
resolves: to a file that exists and, with a #anchor, to a heading of that page. With mkdocs
installed, the site builds with --strict (broken links and anchors are errors there too)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"

_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def _outside_fences(text: str) -> str:
    """The text outside fenced code blocks."""
    kept, fence = [], None
    for line in text.splitlines():
        match = _FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
            continue
        if fence is not None:
            if line.strip().startswith(fence):
                fence = None
            continue
        kept.append(line)
    return "\n".join(kept)


def _prose(text: str) -> str:
    """The text outside fenced code blocks, with inline code spans blanked."""
    return _INLINE_CODE.sub(" ", _outside_fences(text))


def slug(heading: str) -> str:
    """A heading's anchor as GitHub and mkdocs write it: lowercase, punctuation other than hyphens
    and underscores dropped, spaces to hyphens."""
    text = re.sub(r"<[^>]+>", "", heading)  # inline HTML
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link keeps its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    found = set()
    for line in _outside_fences(text).splitlines():
        match = _HEADING.match(line)
        if match:
            found.add(slug(match.group(2)))
    return found


def links(text: str) -> list[str]:
    return [match.group(1) for match in _LINK.finditer(_prose(text))]


def broken_links(page: Path, text: str | None = None) -> list[str]:
    """Each relative link of `page` (or of `text`, read as if it were `page`) that does not resolve,
    with why."""
    text = page.read_text(encoding="utf-8") if text is None else text
    broken = []
    for target in links(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http(s), mailto and other schemes
            continue
        path, _, anchor = target.partition("#")
        if path:
            file = (page.parent / path).resolve()
            if not file.is_file():
                broken.append(f"{target}: no file {file}")
                continue
            name, headings = file.name, file.read_text(encoding="utf-8") if file.suffix == ".md" else None
        else:  # a section of this page
            name, headings = page.name, text
        if anchor and headings is not None and anchor not in anchors(headings):
            broken.append(f"{target}: {name} has no heading with anchor #{anchor}")
    return broken


def pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def test_the_readme_is_short_and_docs_holds_the_rest():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move detail into docs/"
    assert len(pages()) >= 4, "docs/ should hold at least 4 pages"
    assert (DOCS / "index.md").is_file()


def test_the_readme_keeps_the_test_command_ci_runs():
    assert "```bash\npython -m pytest -q\n```" in README.read_text(encoding="utf-8")


@pytest.mark.parametrize("page", [README, *pages()], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert broken_links(page) == []


def test_every_docs_page_is_linked_from_the_readme_and_the_docs_home():
    for home in (README, DOCS / "index.md"):
        targets = {(home.parent / t.partition("#")[0]).resolve() for t in links(home.read_text(encoding="utf-8"))
                   if not re.match(r"^[a-z]+:", t)}
        missing = [p.name for p in pages() if p != home and p.resolve() not in targets]
        assert missing == [], f"{home.name} does not link {missing}"


def test_docs_pages_do_not_link_outside_docs():
    for page in pages():
        for target in links(page.read_text(encoding="utf-8")):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
                continue
            resolved = (page.parent / target.partition("#")[0]).resolve()
            assert resolved.is_relative_to(DOCS.resolve()), f"{page.name} links {target}, outside docs/"


def test_the_checker_flags_a_broken_link(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## Some section: here\n")
    page = tmp_path / "page.md"
    text = ("# Page\n\n[fine](other.md#some-section-here) [mail](mailto:a@b.c) [web](https://example.org/x.md)\n"
            "[self](#page) [no section](#nothing) [missing file](nowhere.md) [missing anchor](other.md#no-such-section)\n"
            "```bash\n[in a fence](nowhere-either.md)\n```\n`[inline code](nor-this.md)`\n")
    broken = broken_links(page, text)
    assert len(broken) == 3
    assert broken[0] == "#nothing: page.md has no heading with anchor #nothing"
    assert broken[1].startswith("nowhere.md: no file")
    assert broken[2] == "other.md#no-such-section: other.md has no heading with anchor #no-such-section"


def test_slugs_match_github_and_mkdocs():
    assert slug("GPU benchmark (one NVIDIA H200, 2026-12-04)") == "gpu-benchmark-one-nvidia-h200-2026-12-04"
    assert slug("The I/O contract") == "the-io-contract"
    assert slug("Evaluation: dwn-eval") == "evaluation-dwn-eval"
    assert slug("`trainer_keys`") == "trainer_keys"
    assert anchors("# A `code` heading\n```\n# not a heading\n```\n") == {"a-code-heading"}


def test_the_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocs")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
