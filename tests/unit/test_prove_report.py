"""`dtk prove`'s model and reports, from synthetic results (pure)."""

from __future__ import annotations

import json
import re

from dtk.kernel.verdict import Verdict
from dtk.prove.html import render_html
from dtk.prove.model import Build, CellResult, ModuleProof, ProveCell, ProveResult
from dtk.prove.report import render_text
from dtk.prove.run import plan_batches, unit_name
from tests.unit.prove_support import synthetic

K, RT = "6.1.0-57-amd64", "6.1.0-57-rt-amd64"


def _cell(row: str, kernel: str, predicted: Verdict, booted: Verdict,
          reason: str = "") -> CellResult:
    return CellResult(ProveCell(row, kernel, f"img/{row}:{kernel}", Build.BUILT, "id"),
                      [ModuleProof(row, predicted, "", booted, reason, boot=1)])


def test_agreement_counts_init_failed_as_loaded_and_ignores_crashes() -> None:
    assert _cell("a", K, Verdict.LOADED, Verdict.INIT_FAILED).modules[0].agrees is True
    assert _cell("a", K, Verdict.REFUSED, Verdict.REFUSED).modules[0].agrees is True
    assert _cell("a", K, Verdict.LOADED, Verdict.REFUSED).modules[0].agrees is False
    assert _cell("a", K, Verdict.REFUSED, Verdict.INIT_FAILED).modules[0].agrees is False
    assert _cell("a", K, Verdict.LOADED, Verdict.CRASHED).modules[0].agrees is None
    assert _cell("a", K, Verdict.LOADED, Verdict.INIT_FAILED).green


def test_the_text_matrix_has_one_cell_each_and_every_reason() -> None:
    result = ProveResult(["a", "b"], [K, RT], [
        _cell("a", K, Verdict.LOADED, Verdict.LOADED),
        _cell("a", RT, Verdict.LOADED, Verdict.REFUSED, "a: disagrees about version"),
        _cell("b", K, Verdict.LOADED, Verdict.INIT_FAILED, "-ENODEV"),
        CellResult(ProveCell("b", RT, "img", Build.FAILED, reason="make failed"))],
        {K: 1, RT: 2}, 3.0)
    text = render_text(result)
    assert "\033[" not in text
    lines = text.splitlines()
    assert lines[0].split() == ["MODULE", K, RT]
    assert lines[1].split() == ["a", "built", "/", "loaded", "/", "loaded", "built", "/",
                                "loaded", "/", "refused", "≠"]
    assert "DISAGREE — check says loaded, boot says refused (a: disagrees about version)" in text
    assert "build failed: make failed" in text and "b: init-failed: -ENODEV" in text
    assert "3 boot(s) (2 kernel(s) + 1 after a crash)" in text
    assert "\033[35m" in render_text(result, colour=True)  # the disagreement stands out
    assert not result.ok and len(result.disagreements) == 1


def test_json_round_trips_module_proofs() -> None:
    proof = _cell("a", RT, Verdict.LOADED, Verdict.INIT_FAILED, "x").modules[0]
    assert ModuleProof.from_json(json.loads(json.dumps(proof.to_json()))) == proof
    data = synthetic(3, 4).to_json()
    assert {c["flavour"] for c in data["cells"]} == {"standard", "rt", "cloud"}
    assert data["total_boots"] == 4


def test_batches_keep_the_matrix_order_per_kernel_with_unique_names() -> None:
    cells = [_cell("a", K, Verdict.LOADED, Verdict.NOT_RUN),
             _cell("b", K, Verdict.REFUSED, Verdict.NOT_RUN),
             _cell("a", RT, Verdict.LOADED, Verdict.NOT_RUN)]
    batches = plan_batches(cells)
    assert [item.name for _w, item in batches[K]] == ["c0-a", "c1-b"]
    assert [item.name for _w, item in batches[RT]] == ["c2-a"]
    assert unit_name(3, "we ird/name") == "c3-we_ird_name"


def test_the_cache_key_names_image_kernel_guest_and_spec() -> None:
    cell = ProveCell("a", K, "img", Build.GIVEN, "sha256:1")
    key = cell.cache_key("script")
    assert key == ProveCell("other-row", K, "img2", Build.BUILT, "sha256:1").cache_key("script")
    assert len({key, cell.cache_key("script v2"),
                ProveCell("a", RT, "img", Build.GIVEN, "sha256:1").cache_key("script"),
                ProveCell("a", K, "img", Build.GIVEN, "sha256:2").cache_key("script"),
                ProveCell("a", K, "img", Build.GIVEN, "sha256:1",
                          modules=("x",)).cache_key("script")}) == 5


def test_the_page_renders_50_by_30_self_contained() -> None:
    page = render_html(synthetic(50, 30).to_json())
    assert page.count('<td class="c ') == 50 * 30
    assert page.count("<tr data-row=") == 50
    assert not re.search(r"(?:src|href)=\"(?:https?:)?//", page)  # no external assets
    assert "http://" not in page and "https://" not in page
    assert len(page) < 3_000_000
    assert "</script>" not in page.split('id="data">', 1)[1].split("</script>", 1)[0]


def test_a_wide_matrix_goes_on_below_and_fits_the_terminal() -> None:
    """Issue 28 §10: every line fits; eight kernels do not fit beside each other in
    120 columns, so they go on in blocks, no cell cut."""
    result = synthetic(4, 8)
    for width in (120, 80):
        text = render_text(result, width=width)
        assert max(len(line) for line in text.splitlines()) <= width
        headers = [line.split()[1:] for line in text.splitlines() if line.startswith("MODULE")]
        assert len(headers) > 1 and [k for h in headers for k in h] == result.kernels
    assert render_text(result, width=1000).count("MODULE") == 1
