"""Training: data and model -> one Lightning Trainer with probes -> the run folder (bsstudy/runfolder/__init__.py).

run.py is the entry (one run); module.py the LightningModule and its chunk loop; fast_step.py and cuda_graph.py
the step; data.py the tensors; evaluate.py the epoch row; stopping.py, target.py, signals.py when a run stops;
parallel.py, packed.py how runs share machines; tuned.py the tuned study's grid and selection."""
