"""The cohort: the input contract of a cohort directory (clinical, series and ROI tables),
drafting series.csv from a DICOM export, pseudonymous input links, the one-cohort-per-directory
record, the consistency of a patient's series, exclusions, and the tuning split and
cross-fitting folds."""
