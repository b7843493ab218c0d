"""Developer tools on top of everything: `make bench` (bench.py, bench_sweep.py) and `make gpu-check`."""
