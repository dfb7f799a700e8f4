"""The proof as one self-contained HTML file: the same matrix, sortable and
filterable by module, kernel line and flavour, each cell opening its reasons,
log tail and the kernel's words. No network, no external assets. Pure.

The table is rendered here, not by the page's script, so it reads without
JavaScript and stays light at 50 modules by 30 kernels; the script only filters,
sorts and shows one cell's details from the JSON embedded in the page. A URL
fragment (#module=acpi&line=6.1&flavour=rt) applies a filter on load.
"""

from __future__ import annotations

import html
import json
from typing import Any

from dtk import scripts
from dtk.prove.model import SEVERITY

_TAIL = 40  # lines of each log kept in the page

def _tail(text: str) -> str:
    return "\n".join(text.splitlines()[-_TAIL:])


def _cell_class(cell: dict[str, Any]) -> str:
    if cell["disagreements"]:
        return "dis"
    if cell["green"]:
        return "init" if cell["boot"] == "init-failed" else "green"
    if cell["build"] == "excluded":
        return "skip"
    return "bad"


def _slim(cell: dict[str, Any]) -> dict[str, Any]:
    """What the page keeps of a cell: tails, not whole logs."""
    keep = {k: cell[k] for k in ("row", "kernel", "image", "built_for", "build", "cached",
                                 "reasons", "build_tail")}
    keep["modules"] = [{"module": m["module"], "predicted": m["predicted"],
                        "booted": m["booted"], "agrees": m["agrees"],
                        "boot_reason": m["boot_reason"], "log": m["log"],
                        "load_output": _tail(m["load_output"]),
                        "kernel_log": _tail(m["kernel_log"])} for m in cell["modules"]]
    return keep


def _label(cell: dict[str, Any]) -> str:
    if cell["build"] in ("failed", "excluded"):
        return {"failed": "B✗", "excluded": "—"}[cell["build"]]
    short = {"loaded": "✓", "init-failed": "i", "refused": "R", "crashed": "C",
             "timed-out": "T", "check-failed": "c", "unload-failed": "u", "not-run": "?"}
    return short.get(cell["boot"], "?") + ("≠" if cell["disagreements"] else "")


def render_html(data: dict[str, Any], title: str = "dtk prove") -> str:
    """`data` is ProveResult.to_json(). The page: header, filters, matrix, details."""
    kernels = [{"kernel": k, "line": "?", "flavour": "?"} for k in data["kernels"]]
    by_key = {(c["row"], c["kernel"]): (i, c) for i, c in enumerate(data["cells"])}
    for info in kernels:
        found = next((c for c in data["cells"] if c["kernel"] == info["kernel"]), None)
        if found:
            info["line"], info["flavour"] = found["line"], found["flavour"]
    payload = {"kernels": kernels, "severity": [v.value for v in SEVERITY] + ["none"],
               "cells": {str(i): _slim(c) for i, c in enumerate(data["cells"])}}
    head = "".join(f'<th class="k" data-col="{i}" data-sort="{i}">{html.escape(k["kernel"])}'
                   '</th>' for i, k in enumerate(kernels))
    body = []
    for row in data["rows"]:
        tds = []
        for i, info in enumerate(kernels):
            hit = by_key.get((row, info["kernel"]))
            if hit is None:
                tds.append(f'<td class="c none" data-col="{i}">·</td>')
                continue
            index, cell = hit
            tip = html.escape("; ".join(cell["reasons"]) or cell["boot"], quote=True)
            tds.append(f'<td class="c {_cell_class(cell)}" data-col="{i}" data-id="{index}" '
                       f'data-v="{cell["boot"]}" title="{tip}">{_label(cell)}</td>')
        body.append(f'<tr data-row="{html.escape(row, quote=True)}"><th>{html.escape(row)}'
                    f'</th>{"".join(tds)}</tr>')
    return _page(title, data, payload, head, "\n".join(body))


def _options(values: list[str]) -> str:
    return "".join(f'<option value="{html.escape(v)}">{html.escape(v)}</option>'
                   for v in sorted(set(values)))


def _page(title: str, data: dict[str, Any], payload: dict[str, Any], head: str,
          body: str) -> str:
    kernels = payload["kernels"]
    lines = _options([k["line"] for k in kernels])
    flavours = _options([k["flavour"] for k in kernels])
    script_data = json.dumps(payload).replace("</", "<\\/")
    summary = (f'{len(data["rows"])} module(s) \u00d7 {len(data["kernels"])} kernel(s); '
               f'{sum(c["green"] for c in data["cells"])} of {len(data["cells"])} cells green; '
               f'{data["disagreements"]} disagreement(s); {data["total_boots"]} boot(s); '
               f'{data["seconds"]} s')
    legend = ('<span class="green">✓ loaded</span><span class="init">i init-failed '
              '(compatible, no hardware)</span><span class="bad">R refused · C crashed · '
              'T timed-out · B✗ build failed</span><span class="dis">≠ check and boot '
              'disagree</span><span class="skip">— excluded</span>')
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width,initial-scale=1">
<style>{scripts.text("prove.css")}</style></head><body>
<h1>{html.escape(title)}</h1><div class="sum" id="summary">{html.escape(summary)}</div>
<div class="bar"><label>module <input id="fm" placeholder="filter"></label>
<label>line <select id="fl"><option value="">all</option>{lines}</select></label>
<label>flavour <select id="ff"><option value="">all</option>{flavours}</select></label>
<span id="shown"></span></div>
<div class="legend">{legend}</div>
<div class="wrap"><table><thead><tr><th data-sort="-1">module ↕</th>{head}</tr></thead>
<tbody>
{body}
</tbody></table></div>
<div id="detail" class="hidden"></div>
<script type="application/json" id="data">{script_data}</script>
<script>{scripts.text("prove.js")}</script>
</body></html>
"""
