"""The accessibility checks themselves: each must find the faults it exists for, or a green crawl
would mean nothing."""

from __future__ import annotations

import pytest

from tests.browser.a11y import (
    add_text_spacing,
    clipped_text,
    require_axe,
    run_axe,
    sideways_scroll,
)

pytestmark = [pytest.mark.browser]

FAULTY = """<!doctype html><html lang="en"><head><title>Faulty</title></head><body><main>
<h1>Faulty page</h1>
<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=">
<table><thead><tr><th>Title</th><th></th></tr></thead><tbody><tr><td>a</td><td>b</td></tr></tbody></table>
<input type="text" name="unlabelled">
<div style="width: 500px">wide</div>
<p style="height: 1.3em; overflow: hidden; width: 40em; line-height: 1.15">Some text that spacing pushes out of its box</p>
</main></body></html>"""


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.route("**/*", lambda route: route.abort())
    yield page
    page.close()


def test_axe_reports_wcag_violations_and_best_practice_apart(page):
    require_axe()
    page.set_content(FAULTY)
    report = run_axe(page, "faulty")
    rules = {f.rule for f in report.violations}
    assert {"image-alt", "label"} <= rules
    assert "empty-table-header" in {f.rule for f in report.best_practice}
    assert all(f.where == "faulty" for f in report.violations)


def test_sideways_scroll_and_clipped_text_are_measured(page):
    page.set_content(FAULTY)
    assert sideways_scroll(page, 320) > 100
    assert page.viewport_size == {"width": 1280, "height": 900}
    assert clipped_text(page) == []
    add_text_spacing(page)
    assert any("spacing pushes" in c for c in clipped_text(page))
