"""Self-contained HTML report of a run directory: figures embedded as PNG, styles inline, no scripts fetched, every
text from datasets and models HTML-escaped. Reads run directories only; never runs a model."""

from vrprobe.reporting.html import build_report

__all__ = ["build_report"]
