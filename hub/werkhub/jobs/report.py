"""The HTML report of a job run: nbconvert's lab template, self-contained and sovereign.

* No CDN: the template's require.js, MathJax, Mermaid and widget-manager scripts are left
  out, and any remaining tag that would load a resource from another host (``<script
  src>``, ``<link href>``, ``<img src>``, ``<iframe src>``) is removed. Plots are embedded
  as data URIs (as nbconvert does for outputs; images in Markdown too).
* Code is hidden by default (``hide_code``); the cell that failed always shows its code,
  outlined in red, with a link to it from the header.
* A header names the job, status, parameters, start (in the job's time zone) and duration.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

FAILED_TAG = "werkhub-failed"
HIDE_INPUT_TAG = "werkhub-hide-input"
FAILED_ID = "werkhub-failed-cell"
#: the lab template writes a cell's id as the anchor "cell-id=<id>"
FAILED_ANCHOR = f"cell-id={FAILED_ID}"

TEMPLATE = r"""{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block extra_css -%}<style type="text/css">{{ resources.werkhub_css }}</style>{%- endblock -%}
{%- block body_header -%}{{ super() }}{{ resources.werkhub_header }}{%- endblock body_header -%}
"""

CSS = """
.werkhub-header { font-family: system-ui, sans-serif; border-bottom: 1px solid #ccc;
  margin: 0 0 1.5em 0; padding: 0.5em 0 1em 0; }
.werkhub-header h1 { font-size: 1.6em; margin: 0 0 0.4em 0; }
.werkhub-header table { border-collapse: collapse; font-size: 0.95em; }
.werkhub-header th { text-align: left; padding: 2px 12px 2px 0; color: #555; font-weight: 600; }
.werkhub-header td { padding: 2px 12px 2px 0; }
.werkhub-status { display: inline-block; padding: 1px 10px; border-radius: 10px; color: #fff; }
.werkhub-status-succeeded { background: #2e7d32; }
.werkhub-status-failed, .werkhub-status-timed_out { background: #c62828; }
.werkhub-error { margin-top: 0.8em; padding: 0.6em 0.8em; background: #fdecea;
  border-left: 4px solid #c62828; white-space: pre-wrap; }
.celltag_werkhub-failed { outline: 3px solid #c62828; outline-offset: 4px;
  background: #fff5f5; }
.celltag_werkhub-failed::before { content: "This cell failed"; color: #c62828;
  font: 600 0.9em system-ui, sans-serif; display: block; margin-bottom: 4px; }
"""

#: tags that load something when the page opens, with an absolute or protocol-relative URL
_LOADING = re.compile(
    r"<(script|link|img|iframe|source|embed)\b[^>]*?\b(?:src|href)\s*=\s*[\"']?"
    r"(?:[a-z][a-z0-9+.-]*:)?//[^>]*>(?:\s*</\1>)?",
    re.IGNORECASE,
)
_CSS_IMPORT = re.compile(r"@import\s+url\(\s*[\"']?(?:https?:)?//[^)]*\)\s*;?", re.IGNORECASE)


@dataclass
class ReportInfo:
    title: str
    job_name: str
    owner: str
    run_id: str
    notebook: str
    parameters: dict[str, Any]
    started: datetime
    duration_s: float
    status: str
    error: str | None = None
    failed_cell: int | None = None
    tz: str = "Europe/Berlin"
    mlflow_run_id: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def header_html(info: ReportInfo) -> str:
    e = html.escape
    try:
        started = info.started.astimezone(ZoneInfo(info.tz))
    except (ValueError, KeyError):
        started = info.started
    rows = [
        ("Job", info.job_name),
        ("Notebook", info.notebook),
        ("Owner", info.owner),
        ("Run", info.run_id),
        ("Started", started.strftime("%Y-%m-%d %H:%M:%S %Z (UTC%z)")),
        ("Duration", _duration(info.duration_s)),
    ]
    if info.mlflow_run_id:
        rows.append(("MLflow run", info.mlflow_run_id))
    rows += list(info.extra.items())
    body = "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in rows)
    status = (
        f'<span class="werkhub-status werkhub-status-{e(info.status)}">'
        f"{e(info.status.replace('_', ' '))}</span>"
    )
    params = "".join(
        f"<tr><th>{e(k)}</th><td><code>{e(_short(v))}</code></td></tr>"
        for k, v in sorted(info.parameters.items())
    )
    params_html = (
        f"<h2>Parameters</h2><table>{params}</table>" if params else "<p>No parameters set.</p>"
    )
    error = ""
    if info.error:
        link = ""
        if info.failed_cell is not None:
            link = f' <a href="#{FAILED_ANCHOR}">Go to the failing cell.</a>'
        error = f'<div class="werkhub-error">{e(info.error)}{link}</div>'
    return (
        f'<header class="werkhub-header"><h1>{e(info.title)}</h1>'
        f"<p>Status: {status}</p><table>{body}</table>{params_html}{error}</header>"
    )


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {sec:02d} s"


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 300 else text[:297] + "..."


def prepare(nb: Any, hide_code: bool, failed_cell: int | None) -> Any:
    """Tag cells: the failing one (highlighted, code shown) and, with ``hide_code``, every
    other code cell's input for removal."""
    for index, cell in enumerate(nb.cells):
        tags = list(cell.get("metadata", {}).get("tags", []))
        if index == failed_cell:
            tags.append(FAILED_TAG)
            cell["id"] = FAILED_ID
        elif hide_code and cell.get("cell_type") == "code":
            tags.append(HIDE_INPUT_TAG)
        cell.setdefault("metadata", {})["tags"] = tags
    return nb


def render_report(
    notebook: Path,
    info: ReportInfo,
    hide_code: bool = True,
    resources_path: Path | None = None,
) -> str:
    """The report as one HTML string (see the module notes)."""
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter
    from traitlets.config import Config

    nb = nbformat.read(str(notebook), as_version=4)
    prepare(nb, hide_code, info.failed_cell)
    config = Config()
    config.TagRemovePreprocessor.enabled = True
    config.TagRemovePreprocessor.remove_input_tags = {HIDE_INPUT_TAG}
    config.HTMLExporter.exclude_input_prompt = hide_code
    config.HTMLExporter.exclude_output_prompt = hide_code
    config.HTMLExporter.embed_images = True
    exporter = HTMLExporter(
        config=config,
        extra_loaders=[DictLoader({"werkhub_report.html.j2": TEMPLATE})],
        template_file="werkhub_report.html.j2",
    )
    resources = {
        "werkhub_header": header_html(info),
        "werkhub_css": CSS,
        "metadata": {"name": info.title, "path": str(resources_path or notebook.parent)},
    }
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    return strip_external(body)


def strip_external(page: str) -> str:
    """Remove every tag that would load a resource from another host when the page opens."""
    return _CSS_IMPORT.sub("", _LOADING.sub("", page))


def write_report(
    notebook: Path,
    target: Path,
    info: ReportInfo,
    hide_code: bool = True,
    resources_path: Path | None = None,
) -> Path:
    """Render and write the report; if rendering itself fails, a plain page with the header
    and the reason is written instead (a report always exists)."""
    try:
        page = render_report(notebook, info, hide_code, resources_path)
    except Exception as exc:
        page = (
            f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(info.title)}'
            f"</title><style>{CSS}</style></head><body>{header_html(info)}"
            f"<p>The notebook could not be rendered: {html.escape(repr(exc))}</p></body></html>"
        )
    target.write_text(page, encoding="utf-8")
    return target
