"""Figures and the HTML/Markdown report of a study, made from its store alone.

matplotlib is imported only when a figure is drawn, so importing this package stays light.
"""

from walkingnoise.report.html import write_report

__all__ = ["write_report"]
