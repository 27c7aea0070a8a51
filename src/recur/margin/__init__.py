"""The ablative margin: post-ablation DP registered onto pre-ablation DP, signed-distance
margin metrics, their figures and the margin models."""
