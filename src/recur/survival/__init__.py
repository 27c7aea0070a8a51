"""Recurrence-free survival: Cox models of the binary models' predictor sets and
censoring-aware metrics (C-index, time-dependent AUC, integrated Brier score) of every model."""
