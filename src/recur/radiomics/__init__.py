"""Radiomics baseline models: pyradiomics features of the tumour, the ablation zone and
rings around them, reduced and fitted by a penalised logistic regression.

* :mod:`~recur.radiomics.settings`: the ``radiomics:`` config section.
* :mod:`~recur.radiomics.features`: regions (ROI, signed-distance rings) and pyradiomics
  extraction on in-memory SimpleITK images, one patient at a time.
* :mod:`~recur.radiomics.model`: the feature filter and the penalised logistic pipeline of
  Radiomics_Pre and Radiomics_PrePost, and the Radiomics_Clinical fusion.

Method and checks: ``docs/methods/radiomics.md``.
"""
