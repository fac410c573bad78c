"""Real Chromium for the admin page's tests: Debian's `chromium` package driven by Playwright, plus the
checks a person looking at a page makes without thinking (nothing sticks out sideways, nothing in the
header sits on top of something else), and recorders for what a page must never do (open a dialog,
break its Content-Security-Policy)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Dialog, Page, Playwright

CHROMIUM = Path("/usr/bin/chromium")
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}


def launch(playwright: Playwright) -> Browser:
    """Debian's chromium, headless; `--no-sandbox` only as root (Chromium refuses to sandbox there).

    Missing chromium fails the test rather than skipping it: CI installs it, so its absence is a broken
    setup, not an optional feature."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} not found: install Debian's chromium package "
            "(apt-get install chromium; ./reflex test and .ci/run install it)"
        )
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)


@dataclass
class Recorder:
    """What every page of a test module did that a user would call broken or dangerous."""

    dialogs: list[str] = field(default_factory=list)
    csp_violations: list[str] = field(default_factory=list)

    def watch(self, context: BrowserContext) -> BrowserContext:
        context.on("dialog", self._dialog)
        context.on("console", self._console)
        return context

    def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message} on {dialog.page.url if dialog.page else '?'}")
        dialog.dismiss()

    def _console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            self.csp_violations.append(f"{message.page.url if message.page else '?'}: {message.text}")


# Runs in the page. Returns one line per problem a person would see: the page wider than the window
# (sideways scrolling), and visible header/nav items drawn over each other.
LAYOUT_JS = r"""() => {
  const problems = [];
  const width = window.innerWidth;
  const name = (el) => {
    let s = el.tagName.toLowerCase();
    if (el.id) s += '#' + el.id;
    else if (el.classList.length) s += '.' + [...el.classList].join('.');
    const text = (el.textContent || '').trim().replace(/\s+/g, ' ').slice(0, 30);
    return text ? `${s} "${text}"` : s;
  };
  const scrollsSideways = (el) => {
    for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
      const ox = getComputedStyle(p).overflowX;
      if (ox === 'auto' || ox === 'scroll' || ox === 'hidden' || ox === 'clip') return true;
    }
    return false;
  };
  if (document.documentElement.scrollWidth > width) {
    const culprits = [...document.body.querySelectorAll('*')]
      .filter((el) => el.getBoundingClientRect().right > width + 1 && !scrollsSideways(el))
      .filter((el, _, all) => !all.some((o) => o !== el && el.contains(o)))
      .slice(0, 4).map(name);
    problems.push(`page is ${document.documentElement.scrollWidth}px wide in a ${width}px window` +
                  (culprits.length ? ` (sticking out: ${culprits.join(', ')})` : ''));
  }
  const visible = (el) => {
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0 &&
           el.checkVisibility({checkOpacity: true, checkVisibilityCSS: true});
  };
  const hasText = (el) => [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
  const items = [];
  for (const root of document.querySelectorAll('header, nav')) {
    for (const el of root.querySelectorAll('*')) {
      if (items.includes(el)) continue;
      const interactive = el.matches('a, button, input, select, textarea, img, svg, label');
      if ((interactive || hasText(el)) && visible(el)) items.push(el);
    }
  }
  for (let i = 0; i < items.length; i++) {
    for (let j = i + 1; j < items.length; j++) {
      const a = items[i], b = items[j];
      if (a.contains(b) || b.contains(a)) continue;
      const ra = a.getBoundingClientRect(), rb = b.getBoundingClientRect();
      const w = Math.min(ra.right, rb.right) - Math.max(ra.left, rb.left);
      const h = Math.min(ra.bottom, rb.bottom) - Math.max(ra.top, rb.top);
      if (w > 1 && h > 1) {
        problems.push(`${name(a)} overlaps ${name(b)} by ${Math.round(w)}x${Math.round(h)}px`);
      }
    }
  }
  for (const el of items) {
    const r = el.getBoundingClientRect();
    if (r.right > width + 1 || r.left < -1) problems.push(`${name(el)} is outside the window`);
  }
  return problems;
}"""


def shoot(page: Page, name: str, folder: Path, path: str | None = None) -> list[str]:
    """Load the page at each size, save a full-page screenshot `<name>-<W>x<H>.png`, and return the
    layout problems found (each prefixed with page and size). `path=None`: the page as it is now
    (reloaded at the second size)."""
    folder.mkdir(parents=True, exist_ok=True)
    problems = []
    for w, h in SIZES.values():
        page.set_viewport_size({"width": w, "height": h})
        if path is not None:
            page.goto(path)
        else:
            page.reload()
        page.wait_for_load_state("load")
        page.wait_for_timeout(700)  # scripts fill the page in (first /api/status, images)
        page.screenshot(path=str(folder / f"{name}-{w}x{h}.png"), full_page=True)
        problems += [f"{name} at {w}x{h}: {p}" for p in page.evaluate(LAYOUT_JS)]
    return problems
