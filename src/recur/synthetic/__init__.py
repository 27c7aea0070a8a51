"""The synthetic cohort: real DICOM files, ROI masks and clinical tables generated from a
documented latent risk model, and the ceilings the benchmarks compare against."""
