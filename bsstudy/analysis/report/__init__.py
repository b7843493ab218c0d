"""Reports: one command turns a sweep folder into the study's figures, tables and findings.

`python -m bsstudy.analysis.report <sweep> [--target-acc 0.85]` (also run at the end of every multirun by the
Hydra callback `bsstudy.analysis.report.callback.ReportCallback`) writes <sweep>/report/. Modules: runs.py reads
the folders into tables, uncertainty.py gives means and 95% intervals over seeds, training.py, cost.py,
dynamics.py and geometry.py draw the sections (figures.py holds what their figures share), findings.py
judges the reference studies' claims, document.py renders HTML and Markdown, build.py ties them
together, wandb_report.py does the W&B side and check.py looks at report.html in headless Chromium.
"""

from bsstudy.analysis.report.build import build_report

__all__ = ["build_report"]
