"""Reading bulletins from the text format of the sample, and from Markdown."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from newsletter.content.parse import parse_bulletin
from newsletter.content.regions import RegionIndex
from newsletter.content.types import BulletinContent
from newsletter.core.config import DEFAULT_REGION_ALIASES, DEFAULT_REGIONS
from newsletter.core.errors import ImportFailed
from newsletter.core.status import ItemKind

REGIONS = RegionIndex.build(DEFAULT_REGIONS, DEFAULT_REGION_ALIASES)


def parse(text: str) -> BulletinContent:
    return parse_bulletin(text, REGIONS, "africa")


def paragraphs_of(text: str) -> list[str]:
    return [p.strip() for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]


def test_the_sample_bulletin(sample_text):
    content = parse(sample_text)
    assert content.title == "IJM Prayer Request"
    assert content.scripture_text == (
        "When justice is done, it brings joy to the righteous but terror to evil doers."
    )
    assert content.scripture_reference == "Proverbs 21:15"
    assert [(s.region_code, len(s.items)) for s in content.sections] == [
        ("africa", 1),
        ("latin-america", 1),
        ("south-asia", 1),
        ("southeast-asia", 1),
        ("global", 2),
    ]
    # Every body is exactly a paragraph of the file.
    file_paragraphs = paragraphs_of(sample_text)
    for section in content.sections:
        for item in section.items:
            assert item.body in file_paragraphs
    assert content.sections[1].items[0].kind == ItemKind.PRAISE
    assert content.sections[0].items[0].kind == ItemKind.PRAY


def test_items_before_the_first_heading_go_to_the_default_region():
    content = parse_bulletin("Title\n\nFirst item.\n\nSouth Asia\n\nSecond.\n", REGIONS, "global")
    assert [(s.region_code, s.items[0].body) for s in content.sections] == [
        ("south-asia", "Second."),
        ("global", "First item."),
    ]


def test_bullets_split_items_and_typography_is_kept_exactly():
    text = (
        "Weekly\n\n“Be still, and know.”\n— Psalm 46:10\n\n"
        "Latin America\n"
        "• Praise God for São Paulo’s *new* team — 12 staff.\n"
        "• Pray for **Lucía** & the court’s ruling…\n"
    )
    content = parse(text)
    assert content.scripture_text == "Be still, and know."
    assert content.scripture_reference == "Psalm 46:10"
    items = content.sections[0].items
    assert [i.body for i in items] == [
        "Praise God for São Paulo’s *new* team — 12 staff.",
        "Pray for **Lucía** & the court’s ruling…",
    ]
    assert [i.kind for i in items] == [ItemKind.PRAISE, ItemKind.PRAY]


@pytest.mark.parametrize("dash", ["-", "–", "—"])
def test_reference_dashes(dash):
    content = parse(f'T\n\n"Verse."\n\n{dash} John 3:16\n\nAn item.\n')
    assert content.scripture_reference == "John 3:16"


def test_headings_match_names_codes_and_aliases_in_any_case():
    text = "T\n\nlatin america\n\nA.\n\nIJM HQ & Global Partners\n\nB.\n\nSOUTHEAST-ASIA\n\nC.\n"
    content = parse(text)
    assert content.region_codes == ("latin-america", "southeast-asia", "global")


def test_markdown_bulletins():
    text = (
        "# Weekly bulletin\n\n> “Be still.”\n> — Psalm 46:10\n\n"
        "## Africa\n\n- Pray for Ghana.\n- Praise for Kenya.\n\n"
        "## HQ & Global Partners\n\nA paragraph\nspanning two lines.\n"
    )
    content = parse(text)
    assert content.title == "Weekly bulletin"
    assert content.scripture_reference == "Psalm 46:10"
    assert [[i.body for i in s.items] for s in content.sections] == [
        ["Pray for Ghana.", "Praise for Kenya."],
        ["A paragraph\nspanning two lines."],
    ]


def test_windows_line_endings_and_bom(sample_text):
    assert parse("\ufeff" + sample_text.replace("\n", "\r\n")) == parse(sample_text)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("", 0, "empty"),
        ("Title only\n", 0, "no items"),
        ("T\n\nAfrica\n\nItem.\n\nEurope Office\n\nItem.\n", 7, "unknown region heading 'Europe Office'"),
        ('T\n\n"A verse without reference."\n\nItem.\n', 3, "no reference"),
        ("T\n\n## Narnia\n\nItem.\n", 3, "unknown region heading 'Narnia'"),
    ],
)
def test_unreadable_files_name_the_line_and_the_problem(text, line, message):
    with pytest.raises(ImportFailed) as failure:
        parse(text)
    problem = failure.value.problems[0]
    assert problem.line == line
    assert message in problem.message
    assert "nothing was stored" in str(failure.value)


@hsettings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.text(max_size=80),
            st.sampled_from(["", "Africa", "## South Asia", "• Praise x", '"Verse"', "- Ref", "# T", "> q"]),
        ),
        max_size=30,
    )
)
def test_any_input_gives_a_whole_bulletin_or_clear_errors(lines):
    text = "\n".join(lines)
    try:
        content = parse(text)
    except ImportFailed as failure:
        assert failure.problems and all(p.message for p in failure.problems)
        return
    assert content.title
    assert content.sections, "a parsed bulletin always has at least one item"
    codes = [s.region_code for s in content.sections]
    assert codes == [c for c in REGIONS.codes if c in codes], "sections come in region order"
    assert all(item.body.strip() for s in content.sections for item in s.items)
