"""The analysis side: it reads run folders (bsstudy/runfolder/__init__.py) and never imports the training.

report/ (sweep -> tables, figures, verdicts -> report.html, report.md, W&B), geometry/ (the geometry measures on
finished runs), recommend.py (the tuned study's answer), speed_table.py (the speed study's table)."""
