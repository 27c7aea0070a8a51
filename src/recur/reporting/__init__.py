"""Study reporting: Figure 1 (enrolment flow), Table S1 (MRI acquisition) and the
TRIPOD+AI checklist."""
