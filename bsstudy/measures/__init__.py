"""Loss geometry around a trained network: is a small-batch minimizer flatter than a large-batch one?

Every measure evaluates the mean NLL loss of the network as a function of one flat parameter vector
theta (objective.py), on a fixed, seeded subset of the training (and test) data, in large chunks, with
batch norm under the one convention model.geometry_bn (running or batch statistics, see objective.py):

- sharpness.py:     Keskar et al. (2017)'s eps-box sharpness (L-BFGS-B), in the full space and in a
                    random subspace, and the mean loss increase at random points of the same box
- interpolation.py: the loss along (1 - alpha) theta_a + alpha theta_b between two minimizers
- landscape.py:     Li et al. (2018)'s filter-normalized random directions, a 1-D curve and a 2-D grid
- hessian.py:       extreme Hessian eigenvalues (Lanczos, with residuals) and trace (Hutchinson),
                    from Hessian-vector products only

Pure maths on f(theta): nothing here knows a run, a config or a file. The probes in bsstudy/probes/ call these
at the end of training; `python -m bsstudy.analysis.geometry` runs them on the checkpoints of finished runs.
"""
