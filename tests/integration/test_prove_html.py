"""`dtk prove --html`'s page in a real headless browser (Debian's chromium): 50
modules by 30 kernels from synthetic results, every cell present, a filter from
the URL fragment applied by the page's own script, and a screenshot kept as a
test artifact (its path is printed; it is not committed)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dtk.prove.html import render_html
from tests.unit.prove_support import synthetic

CHROMIUM = shutil.which("chromium")


def chromium(*args: str) -> str:
    assert CHROMIUM, "chromium is not installed (make system-deps)"
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                           "--virtual-time-budget=5000", *args], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("prove-html") / "prove.html"
    path.write_text(render_html(synthetic(50, 30).to_json()))
    return path


def test_the_page_shows_every_cell(page: Path) -> None:
    dom = chromium("--dump-dom", page.as_uri())
    assert len(re.findall(r'<td class="c [^"]*" data-col=', dom)) == 50 * 30
    assert "50 module(s) \u00d7 30 kernel(s) shown" in dom


def test_a_filter_in_the_fragment_hides_rows_and_columns(page: Path) -> None:
    dom = chromium("--dump-dom", page.as_uri() + "#module=module-0&flavour=rt")
    rows = re.findall(r'<tr data-row="([^"]+)"( class="hidden")?', dom)
    assert [r for r, hidden in rows if not hidden] == [f"module-0{i}" for i in range(10)]
    assert "10 module(s) \u00d7 10 kernel(s) shown" in dom
    heads = re.findall(r'<th class="k( hidden)?" data-col="\d+" data-sort="\d+">([^<]+)</th>',
                       dom)
    shown = [k for hidden, k in heads if not hidden]
    assert len(shown) == 10 and all("-rt-" in k for k in shown)


def test_a_screenshot_reads(page: Path) -> None:
    shot = page.with_suffix(".png")
    chromium(f"--screenshot={shot}", "--window-size=1400,1000", page.as_uri() + "#line=6.1")
    assert shot.stat().st_size > 20_000
    print(f"\nscreenshot: {shot}")
