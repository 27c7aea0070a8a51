"""Workarounds for Snakemake internals, applied by the workflow's rules files (not part of
the package's pipeline stages)."""
