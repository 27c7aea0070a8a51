"""Deployment: the portable model bundle and `recur predict`, which scores new patients from
DICOM with the workflow's own functions."""
