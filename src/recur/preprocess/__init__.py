"""Preprocessing, one patient at a time: DICOM to de-identified NIfTI, ROI-mask checks,
registration of the phases onto the delayed phase, the three-slice crops and the per-patient QC
pictures, each run per time point as a step."""
