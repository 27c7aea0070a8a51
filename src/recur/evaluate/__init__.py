"""Evaluation of the models: performance statistics (metrics, bootstrap, cutoffs, DeLong,
calibration), Table 1 and the evaluation figures."""
