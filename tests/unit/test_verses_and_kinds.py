"""The verse keeps its inner quotes, and items are labelled only when they ask for prayer or praise."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from newsletter.content.parse import item_kind, parse_bulletin, strip_enclosing_quotes
from newsletter.content.regions import RegionIndex
from newsletter.core.config import DEFAULT_REGION_ALIASES, DEFAULT_REGIONS
from newsletter.core.status import ItemKind

REGIONS = RegionIndex.build(DEFAULT_REGIONS, DEFAULT_REGION_ALIASES)
JEREMIAH = '"For I know the plans I have for you," declares the LORD, "plans to prosper you."'


def verse_of(verse_block: str, *, markdown: bool = False) -> tuple[str, str]:
    title = "# Title" if markdown else "Title"
    content = parse_bulletin(f"{title}\n\n{verse_block}\n\nPray for the team.\n", REGIONS, "africa")
    return content.scripture_text, content.scripture_reference


@pytest.mark.parametrize(
    ("block", "text", "reference"),
    [
        # inner quotes: the marks around the whole line belong to two separate quotations
        (f"{JEREMIAH}\n- Jeremiah 29:11", JEREMIAH, "Jeremiah 29:11"),
        # an enclosing pair goes, the quotation inside it stays
        (
            "\"He said, 'Let justice roll down.'\"\n- Amos 5:24",
            "He said, 'Let justice roll down.'",
            "Amos 5:24",
        ),
        (
            "“Seek justice, defend the oppressed.”\n— Isaiah 1:17",
            "Seek justice, defend the oppressed.",
            "Isaiah 1:17",
        ),
        ("“The LORD’s “justice” stands.”\n– Psalm 9:7", "The LORD’s “justice” stands.", "Psalm 9:7"),
        (
            "“I will,” says the LORD, “rescue.”\n- Psalm 12:5",
            "“I will,” says the LORD, “rescue.”",
            "Psalm 12:5",
        ),
        (
            "Learn to do right; seek justice.\n- Isaiah 1:17",
            "Learn to do right; seek justice.",
            "Isaiah 1:17",
        ),
        (
            '"Do justice."\n- Micah 6:8 ("the LORD’s requirement")',
            "Do justice.",
            'Micah 6:8 ("the LORD’s requirement")',
        ),
    ],
    ids=[
        "inner-straight",
        "nested",
        "curly",
        "curly-inner",
        "curly-two-quotes",
        "no-quotes",
        "quote-in-reference",
    ],
)
def test_only_a_pair_of_quotes_enclosing_the_whole_verse_is_removed(block, text, reference):
    assert verse_of(block) == (text, reference)


def test_a_markdown_verse_block_keeps_its_inner_quotes():
    assert verse_of(f"> {JEREMIAH}\n> — Jeremiah 29:11", markdown=True) == (JEREMIAH, "Jeremiah 29:11")
    assert verse_of("> Seek justice.\n> — Isaiah 1:17", markdown=True) == ("Seek justice.", "Isaiah 1:17")


@given(st.text(alphabet=st.sampled_from("ab ,.\"“”‘’'"), max_size=30))
def test_stripping_never_unbalances_straight_quotes(text):
    out = strip_enclosing_quotes(text)
    assert out in text  # only removes from the ends
    assert text.strip().count('"') - out.count('"') in (0, 2)
    if out != text.strip():  # what was removed was one pair around everything
        assert text.strip()[1:-1].strip() == out


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ("Pray for all of the preparations.", ItemKind.PRAY),
        ("Prayers for the survivors.", ItemKind.PRAY),
        ("Ask for God's guidance.", ItemKind.PRAY),
        ("Please pray for the court.", ItemKind.PRAY),
        ("Please ask God to bring the right people.", ItemKind.PRAY),
        ("**Pray** for rest.", ItemKind.PRAY),
        ("Praise God that 2,500 officers were trained.", ItemKind.PRAISE),
        ("IJM headquarters is located in the United States.", ItemKind.PLAIN),
        ("Asia Pacific news: the office opened.", ItemKind.PLAIN),
    ],
)
def test_the_kind_rule(body, kind):
    assert item_kind(body) == (kind, body)


@pytest.mark.parametrize("marker", ["[plain]", "[PLAIN]", " [Plain] "])
def test_a_marker_says_the_kind_outright_and_is_removed(marker):
    assert item_kind(f"{marker}Pray-a-thon results are in.") == (
        ItemKind.PLAIN,
        "Pray-a-thon results are in.",
    )
    assert item_kind("[praise] The case was won.") == (ItemKind.PRAISE, "The case was won.")
    assert item_kind("[pray] The case is on Monday.") == (ItemKind.PRAY, "The case is on Monday.")


def test_the_sample_statement_gets_no_label(sample_text):
    content = parse_bulletin(sample_text, REGIONS, "africa")
    hq = content.sections[-1].items
    assert hq[0].body.startswith("IJM headquarters") and hq[0].kind == ItemKind.PLAIN
    assert hq[1].kind == ItemKind.PRAY
