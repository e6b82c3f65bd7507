"""Each kind of email (bulletin, staff test send, confirmation) through axe-core at a phone's and a
desktop's width, in light and dark mode: no WCAG 2.2 A/AA violation, no sideways scrolling, and the
email is one article named by its subject. Best-practice findings are printed; their number may not
grow past `BEST_PRACTICE_BASELINE`.

Real mail clients add their own styles and dark modes: see docs/accessibility.md for what this cannot
show.
"""

from __future__ import annotations

import pytest

from newsletter.content.bulletins import parse_bulletin
from newsletter.content.render import Renderer, personalize
from newsletter.content.types import Recipient
from newsletter.core.config import Settings
from newsletter.mail.links import Links
from tests.browser.a11y import AxeReport, run_axe

pytestmark = [pytest.mark.browser]

WIDTHS = (375, 800)
SCHEMES = ("light", "dark")
BEST_PRACTICE_BASELINE = 24
"""Best-practice findings (email × width × scheme × rule) of the last accepted run: 2 per rendering,
`landmark-one-main` and `region`. An email has no `<main>` on purpose: a webmail page already has its
own, so the email is an `article` named by its subject (the view-online page adds the `<main>`)."""


def emails(settings: Settings, sample_text: str) -> dict[str, tuple[str, str]]:
    """kind → (subject, HTML as a recipient gets it)."""
    renderer = Renderer(settings)
    content = parse_bulletin(sample_text, settings)
    codes = [s.region_code for s in content.sections]
    values = Links(settings).values(Recipient("ruth@example.org", "Ruth", 1, bulletin_id=1))
    bulletin = renderer.variant(content, codes)
    test_send = renderer.variant(content, codes[:2], test=True)
    confirmation = renderer.confirmation("ruth@example.org", "Ruth")
    return {
        "bulletin": (bulletin.subject, personalize(bulletin, values)[0]),
        "test send": (test_send.subject, personalize(test_send, values)[0]),
        "confirmation": (confirmation.subject, personalize(confirmation, values)[0]),
    }


def test_every_email_kind_meets_wcag_22_aa_in_light_and_dark_at_375_and_800px(
    browser, basic_settings, sample_text
):
    found = AxeReport()
    checked = []
    for kind, (subject, html) in emails(basic_settings, sample_text).items():
        for width in WIDTHS:
            for scheme in SCHEMES:
                page = browser.new_page(viewport={"width": width, "height": 900}, color_scheme=scheme)
                page.route("**/*", lambda route: route.abort())  # an email loads nothing
                try:
                    page.set_content(html, wait_until="load")
                    where = f"{kind} {width}px {scheme}"
                    article = page.get_by_role("article", name=subject)
                    assert article.count() == 1, where
                    overflow = page.evaluate(
                        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
                    )
                    assert overflow <= 0, f"{where} scrolls sideways by {overflow}px"
                    found.extend(run_axe(page, where))
                    checked.append(where)
                finally:
                    page.close()
    print(f"\naccessibility of emails: {len(checked)} renderings ({', '.join(checked)})")
    print(f"best-practice findings: {len(found.best_practice)} (baseline {BEST_PRACTICE_BASELINE})")
    print("\n".join(f"  {f}" for f in found.best_practice))
    assert [str(v) for v in found.violations] == []
    assert len(found.best_practice) <= BEST_PRACTICE_BASELINE
    assert len(checked) == 12
