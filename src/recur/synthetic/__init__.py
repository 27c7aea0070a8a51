"""The synthetic cohort: real DICOM files, ROI masks and clinical tables generated from a
documented latent risk model, and the ceilings the benchmarks compare against.

Modules: ``sites`` (site profiles, the patient plan), ``latent`` (latent model of the
patients and their outcomes, clinical table), ``ceilings`` (information and learnable
ceilings), ``anatomy`` (a patient's anatomy and its rasterisation), ``acquisition`` (grids,
phase motion, the simulated images), ``dicom_writer`` (MR series as DICOM files) and
``cohort`` (writing a whole cohort and its truth; ``recur synth``).
"""
