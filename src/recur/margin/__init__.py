"""The ablative margin: post-ablation DP registered onto pre-ablation DP, signed-distance
margin metrics, their figures and the margin models.

:mod:`~recur.margin.registration` (post-to-pre registration and its settings),
:mod:`~recur.margin.masks` (region masks, signed distances, the zone carried onto the pre
grid), :mod:`~recur.margin.metrics` (tumour-surface margins and the cohort table),
:mod:`~recur.margin.models` (Clinical_Margin, DL_Clinical_Margin), :mod:`~recur.margin.plots`
(figures) and :mod:`~recur.margin.files` (the file edges the workflow calls).
"""
