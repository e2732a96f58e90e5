"""Self-contained HTML report of a run directory: figures embedded as PNG, styles inline, no scripts fetched.

`html.py` prepares the page's data (the verdict and the tables, formatted numbers), `sections.py` its figures (base64
PNGs from `plots.py` and `flow.py`, one section per model); `templates/report.html.j2` is the page, rendered by jinja2
with autoescape on, so every text from datasets, models and the manifest is escaped by construction. Reads run
directories only; never runs a model.
"""

from vrprobe.reporting.html import build_report

__all__ = ["build_report"]
