"""Accessibility checks in the browser: axe-core, sideways scrolling, keyboard focus, text clipping.

axe-core comes from npm (`package.json`; `scripts/install.sh` runs `npm ci` for the test extras, as it
installs chromium), and is put into each page with Playwright's `add_script_tag(path=...)`: nothing is
fetched at run time. Admin pages forbid scripts (CSP), so contexts that run axe use `bypass_csp=True`.

    run_axe(page, where)          an `AxeReport`: WCAG 2.2 A/AA violations (the suite fails on any) and
                                  best-practice findings (printed; their count may not grow)
    sideways_scroll(page, width)  how many CSS pixels the page scrolls sideways at `width` (WCAG 1.4.10)
    tab_sequence(page, presses)   what Tab reaches, in order, and whether each stop shows its focus
    focusable_in_order(page)      what Tab should reach: the visible, enabled controls in document order
    clipped_text(page)            elements whose text is cut off by `overflow: hidden` (WCAG 1.4.12)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
AXE_JS = ROOT / "node_modules" / "axe-core" / "axe.min.js"
WCAG_TAGS = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa")
"""WCAG 2.2 levels A and AA, as axe-core tags its rules."""

# WCAG 1.4.12's test values, as a style sheet that wins over the page's own.
TEXT_SPACING_CSS = """
* { line-height: 1.5 !important; letter-spacing: 0.12em !important; word-spacing: 0.16em !important; }
p { margin-bottom: 2em !important; }
"""


@dataclass(frozen=True)
class Finding:
    where: str
    rule: str
    impact: str
    help: str
    targets: tuple[str, ...]

    def __str__(self) -> str:
        shown = ", ".join(self.targets[:3]) + (" …" if len(self.targets) > 3 else "")
        return f"{self.where}: {self.rule} ({self.impact}) {self.help} [{shown}]"


@dataclass
class AxeReport:
    violations: list[Finding] = field(default_factory=list)
    best_practice: list[Finding] = field(default_factory=list)

    def extend(self, other: AxeReport) -> None:
        self.violations += other.violations
        self.best_practice += other.best_practice


def require_axe() -> Path:
    """The axe-core script; the test fails in CI without it (skips on a machine without `npm ci`)."""
    if not AXE_JS.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{AXE_JS} is missing: scripts/install.sh installs axe-core with npm ci")
        pytest.skip("axe-core is not installed (npm ci)")
    return AXE_JS


_RUN_AXE = """async (tags) => {
  const result = await axe.run(document, {
    runOnly: { type: 'tag', values: tags },
    resultTypes: ['violations'],
    iframes: false,
  });
  return result.violations.map(v => ({
    id: v.id, impact: v.impact || '', help: v.help, tags: v.tags,
    targets: v.nodes.map(n => n.target.join(' ')),
  }));
}"""


def run_axe(page: Any, where: str) -> AxeReport:
    """axe-core on the page as it is now. Frames are not entered: the admin preview's sandboxed iframe
    cannot run scripts, and the emails it shows are checked on their own."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(require_axe()))
    raw = page.evaluate(_RUN_AXE, [*WCAG_TAGS, "best-practice"])
    report = AxeReport()
    for v in raw:
        finding = Finding(where, v["id"], v["impact"], v["help"], tuple(v["targets"]))
        if set(v["tags"]) & set(WCAG_TAGS):
            report.violations.append(finding)
        else:
            report.best_practice.append(finding)
    return report


def sideways_scroll(page: Any, width: int = 320) -> int:
    """CSS pixels of horizontal scrolling at `width` (0 means the page reflows, WCAG 1.4.10)."""
    size = page.viewport_size
    page.set_viewport_size({"width": width, "height": 640})
    try:
        return int(
            page.evaluate(
                "Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
                " - document.documentElement.clientWidth"
            )
        )
    finally:
        page.set_viewport_size(size)


_DESCRIBE = """el => {
  if (!el || el === document.body) return null;
  const style = getComputedStyle(el);
  const outline = style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) >= 2;
  const shadow = style.boxShadow && style.boxShadow !== 'none';
  const box = el.getBoundingClientRect();
  const same = window.__a11yLastFocus === el;
  window.__a11yLastFocus = el;
  return {
    same: same,
    key: el.id || el.getAttribute('name') || el.getAttribute('href') || el.textContent.trim().slice(0, 40),
    visible_focus: outline || shadow,
    on_screen: box.right > 0 && box.bottom > 0 && box.left < innerWidth && box.top < innerHeight,
  };
}"""

_FOCUSABLE = """() => {
  const all = document.querySelectorAll('a[href], button, input, select, textarea, summary, [tabindex]');
  return Array.from(all).filter(el => {
    if (el.disabled || el.tabIndex < 0 || el.type === 'hidden') return false;
    if (el.closest('[aria-hidden="true"], [inert]')) return false;
    const details = el.closest('details');
    if (details && !details.open && el.tagName !== 'SUMMARY') return false;
    return el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden';
  }).map(el => el.id || el.getAttribute('name') || el.getAttribute('href') || el.textContent.trim().slice(0, 40));
}"""


def focusable_in_order(page: Any) -> list[str]:
    """Keys (id, name, href or text) of what Tab should reach, in document order: the page uses no
    positive tabindex, so document order is the focus order."""
    return list(page.evaluate(_FOCUSABLE))


def focused(page: Any) -> dict[str, Any] | None:
    """The focused element's key, whether its focus is visible, and whether it is on screen."""
    return page.evaluate(f"({_DESCRIBE})(document.activeElement)")  # type: ignore[no-any-return]


def tab_sequence(page: Any, stops_wanted: int) -> list[dict[str, Any]]:
    """Press Tab until focus has moved to `stops_wanted` controls; what got focus, in order. Tab stops
    inside one control (the day, month and year of a date field) count once."""
    focused(page)  # remember where focus starts
    stops: list[dict[str, Any]] = []
    for _ in range(stops_wanted * 10):
        if len(stops) == stops_wanted:
            break
        page.keyboard.press("Tab")
        stop = focused(page)
        assert stop is not None, "Tab left the page's controls"
        if not stop["same"]:
            stops.append(stop)
    return stops


def assert_keyboard_order(page: Any, limit: int = 60) -> list[str]:
    """Tab from where focus is now: every control is reached, in document order, with visible focus."""
    expected = focusable_in_order(page)
    now = focused(page)
    start = expected.index(now["key"]) + 1 if now and now["key"] in expected else 0
    expected = expected[start : start + limit]
    stops = tab_sequence(page, len(expected))
    reached = [s["key"] for s in stops]
    assert reached == expected, f"Tab order {reached} instead of {expected}"
    hidden = [s["key"] for s in stops if not s["visible_focus"]]
    assert hidden == [], f"no visible focus on {hidden}"
    off_screen = [s["key"] for s in stops if not s["on_screen"]]
    assert off_screen == [], f"focused but off screen: {off_screen}"
    return expected


_CLIPPED = """() => {
  const skip = '.visually-hidden, .hp-field, .preheader, .skip-link, [aria-hidden="true"]';
  const out = [];
  for (const el of document.querySelectorAll('body *')) {
    if (el.closest(skip)) continue;
    const style = getComputedStyle(el);
    const hides = v => v === 'hidden' || v === 'clip';
    if (!hides(style.overflowX) && !hides(style.overflowY)) continue;
    if (!el.textContent.trim()) continue;
    if (el.scrollHeight > el.clientHeight + 1 || el.scrollWidth > el.clientWidth + 1) {
      out.push((el.className || el.tagName) + ': ' + el.textContent.trim().slice(0, 50));
    }
  }
  return out;
}"""


def clipped_text(page: Any) -> list[str]:
    """Elements whose text overflows a box that hides overflow: text lost to the reader."""
    return list(page.evaluate(_CLIPPED))


def add_text_spacing(page: Any) -> None:
    """WCAG 1.4.12's spacing (line height 1.5, paragraphs 2 em apart, letters 0.12 em, words 0.16 em)."""
    page.add_style_tag(content=TEXT_SPACING_CSS)
