"""recur: predicting early recurrence of HCC after thermal ablation from longitudinal MRI."""

__version__ = "0.1.0"
