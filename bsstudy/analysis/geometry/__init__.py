"""The loss-geometry measures (bsstudy/measures/) on the checkpoints of finished runs and sweeps:
`python -m bsstudy.analysis.geometry` (__main__.py); runs.py rebuilds a finished run's network and data."""
