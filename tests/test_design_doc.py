"""docs/design.md resolves every design citation in the code: sections, equations, Algorithm 1.

A section is cited as "design §N" or "design doc §N", optionally followed by more sections
("design §3, §8"); it is defined by a heading "## N. " or "### N.M ".
An equation is cited as "eq. N", "eqs. N-M", "eqs. N, M and K" (any case); it is defined by a
line that starts with the label "**(eq. N)**". "Algorithm 1 lines N-M" must fall inside the
numbered listing that follows the heading "### 6.1 Algorithm 1".
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "design.md"
SCANNED_DIRS = ("textgame", "trainers", "grammars", "recipes", "benchmarks", "tests")
SCANNED_SUFFIXES = (".py", ".lark")
SPEC_SECTIONS = ("Layout", "uplink cell", "baselines", "Text game", "Protocol action grammar",
                 "Trainer", "Offline rule", "Headline results")  # §1-§8, in this order

_SECTION_REF = re.compile(r"design(?: doc)?\s+§(\d+(?:\.\d+)?)"
                          r"((?:\s*(?:,|and|/)\s*§\d+(?:\.\d+)?)*)")
_MORE_SECTIONS = re.compile(r"§(\d+(?:\.\d+)?)")
_EQ_REF = re.compile(r"\b[Ee]qs?\.\s*\(?(\d+(?:\s*(?:-|–|,|and)\s*\d+)*)")
_ALGO_REF = re.compile(r"Algorithm 1,?\s+lines?\s+(\d+)(?:\s*[-–]\s*(\d+))?")
_SECTION_DEF = re.compile(r"^## (\d+)\. (.+)$|^### (\d+\.\d+) ", re.MULTILINE)
_EQ_DEF = re.compile(r"^\*\*\(eq\. (\d+)\)\*\*", re.MULTILINE)


# ----------------------------------------------------------------------------- citations
def cited_sections(text: str) -> set[str]:
    """Section numbers ("2", "2.1") cited in ``text``."""
    out = set()
    for match in _SECTION_REF.finditer(text):
        out.add(match.group(1))
        out.update(_MORE_SECTIONS.findall(match.group(2)))
    return out


def cited_equations(text: str) -> set[int]:
    """Equation numbers cited in ``text``; a range "12-14" cites 12, 13 and 14."""
    out: set[int] = set()
    for match in _EQ_REF.finditer(text):
        for part in re.split(r"\s*(?:,|and)\s*", match.group(1)):
            low, _, high = re.sub(r"\s", "", part).replace("–", "-").partition("-")
            out.update(range(int(low), int(high or low) + 1))
    return out


def cited_algorithm_lines(text: str) -> set[int]:
    out: set[int] = set()
    for match in _ALGO_REF.finditer(text):
        low = int(match.group(1))
        out.update(range(low, int(match.group(2) or low) + 1))
    return out


# --------------------------------------------------------------------------- definitions
def defined_sections(doc: str) -> list[str]:
    """Section numbers of the doc's headings, in order ("1", ..., "2.1", ...)."""
    return [m.group(1) or m.group(3) for m in _SECTION_DEF.finditer(doc)]


def defined_equations(doc: str) -> list[int]:
    return [int(n) for n in _EQ_DEF.findall(doc)]


def algorithm_lines(doc: str) -> list[int]:
    """Line numbers of the first code block after the heading "### 6.1 Algorithm 1"."""
    after = doc.split("\n### 6.1 Algorithm 1", 1)[1]
    block = after.split("```", 2)[1]
    return [int(m) for m in re.findall(r"^\s*(\d+)\s", block, re.MULTILINE)]


# ------------------------------------------------------------------------------- the code
def _sources() -> list[Path]:
    files = [p for d in SCANNED_DIRS for p in sorted((ROOT / d).rglob("*"))
             if p.suffix in SCANNED_SUFFIXES and p.is_file()]
    return [p for p in files if p.resolve() != Path(__file__).resolve()]


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text("utf-8")


@pytest.fixture(scope="module")
def code() -> dict[Path, str]:
    return {p: p.read_text("utf-8") for p in _sources()}


def _missing(code: dict[Path, str], cited, defined) -> list[str]:
    return [f"{p.relative_to(ROOT)}: {sorted(cited(text) - set(defined))}"
            for p, text in code.items() if cited(text) - set(defined)]


# ---------------------------------------------------------------------------------- tests
def test_the_parsers_read_every_citation_form():
    text = ("design §2 step 1; design §6.1, see design doc §5; (design §3, §8); paper §IV; "
            "eq. 1, eqs. 2, 3 and 5; Eqs. 10 and 12-13; eq. 8-9; eqs. 47–49; eq. 5, JFI = 1/3; "
            "Algorithm 1 lines 5-13, Algorithm 1 line 7")
    assert cited_sections(text) == {"2", "6.1", "5", "3", "8"}
    assert cited_equations(text) == {1, 2, 3, 5, 8, 9, 10, 12, 13, 47, 48, 49}
    assert cited_algorithm_lines(text) == {5, 6, 7, 8, 9, 10, 11, 12, 13}


def test_a_dangling_citation_is_reported():
    fake = {ROOT / "fake.py": "see design §42 and eqs. 98-99 and Algorithm 1 lines 90-91"}
    assert _missing(fake, cited_sections, ["1", "2"]) == ["fake.py: ['42']"]
    assert _missing(fake, cited_equations, [1, 98]) == ["fake.py: [99]"]
    assert _missing(fake, cited_algorithm_lines, range(1, 91)) == ["fake.py: [91]"]


def test_the_code_cites_design_sections_and_equations(code):
    # guards the scan itself: an empty scan would make the resolution tests pass vacuously
    assert len(code) > 50
    assert {"2", "4", "5", "6"} <= set().union(*map(cited_sections, code.values()))
    assert {1, 2, 5, 12, 13} <= set().union(*map(cited_equations, code.values()))
    assert {5, 13, 16, 21} <= set().union(*map(cited_algorithm_lines, code.values()))


def test_sections_keep_the_numbering_one_to_eight_and_are_unique(doc):
    headings = re.findall(r"^## (\d+)\. (.+)$", doc, re.MULTILINE)
    assert [int(n) for n, _ in headings[:8]] == list(range(1, 9))
    for (_, title), words in zip(headings, SPEC_SECTIONS, strict=False):
        assert words.lower() in title.lower()
    numbers = defined_sections(doc)
    assert len(numbers) == len(set(numbers))


def test_equation_labels_are_unique(doc):
    labels = defined_equations(doc)
    assert len(labels) == len(set(labels))


def test_algorithm_1_listing_is_numbered_from_one(doc):
    lines = algorithm_lines(doc)
    assert lines == list(range(1, len(lines) + 1))


def test_every_cited_section_is_defined(doc, code):
    assert _missing(code, cited_sections, defined_sections(doc)) == []


def test_every_cited_equation_is_defined(doc, code):
    assert _missing(code, cited_equations, defined_equations(doc)) == []


def test_every_cited_algorithm_line_is_listed(doc, code):
    assert _missing(code, cited_algorithm_lines, algorithm_lines(doc)) == []


def test_the_doc_resolves_its_own_citations(doc):
    inside = set(_MORE_SECTIONS.findall(doc))  # the doc says "§2.4"; "paper §IV" has no digit
    assert inside <= set(defined_sections(doc))
    assert cited_equations(doc) <= set(defined_equations(doc))


def test_no_reference_points_outside_the_repository():
    """The code cites the repository's design doc, not the design input it was written from."""
    stale = [f"{path}:{n}" for path in _sources() if path.name != "test_design_doc.py"
             for n, line in enumerate(path.read_text().splitlines(), start=1)
             if "SPEC §" in line]
    assert stale == []


# ---------------------------------------------------------------------------- §1 layout
LAYOUT_ROOTS = ("textgame", "grammars", "trainers", "recipes", "benchmarks", "tests", "docs")


def layout_block(doc: str) -> str:
    """The code block of "## 1. Layout"."""
    return doc.split("\n## 1. Layout", 1)[1].split("```", 2)[1]


def packages() -> list[str]:
    """Every folder of Python code under the top-level folders, as "name/" (subpackages of
    trainers and textgame by their own name: "policy/", "backends/")."""
    out = [f"{name}/" for name in LAYOUT_ROOTS]
    for root in ("trainers", "textgame"):
        out += sorted(f"{p.parent.name}/" for p in (ROOT / root).rglob("*.py")
                      if p.parent != ROOT / root and "__pycache__" not in p.parts)
    return sorted(set(out))


def unlisted(block: str, names: list[str]) -> list[str]:
    return [name for name in names if not re.search(rf"(?<![\w/]){re.escape(name)}", block)]


def test_the_layout_lists_every_package(doc):
    assert {"policy/", "cli/", "student/"} <= set(packages())  # the scan itself
    assert unlisted(layout_block(doc), packages()) == []


def test_the_layout_check_fails_for_an_unlisted_package():
    block = "textgame/  trainers/  policy/ (model), mypolicy/"
    assert unlisted(block, ["textgame/", "policy/", "newpkg/", "licy/"]) == ["newpkg/", "licy/"]
