# DICOM -> de-identified NIfTI, one job per patient and time point (issue 3)
