"""Evaluation of the models: performance statistics (metrics, bootstrap, cutoffs, DeLong,
calibration), the evaluation tables and the files they read, Table 1 and the evaluation figures."""
