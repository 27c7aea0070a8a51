"""The models a bundle carries, as data: one :class:`ModelEntry` per model.

Every model the study evaluates is one entry of :data:`CATALOGUE`: its kind (how it is stored
and scored: a ``dl`` signature network, a ``tabular`` scikit-learn pipeline, a ``radiomics``
pipeline of :mod:`recur.radiomics.model`, or a ``survival`` Cox model), the inputs it reads
(:data:`INPUTS`) and, from them, whether it needs the post-ablation series. The bundle rule,
``recur bundle`` and ``recur predict`` read these entries; none of them names a model. Adding
a model of an existing kind is one catalogue line (and, for a new input, a feature function in
:mod:`recur.deploy.scoring`).

The module imports nothing heavy: the workflow's rules read it when the DAG is built.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from recur.constants import COX_MODEL_FILES, DL_MODELS

#: How a model is stored and scored.
KINDS: tuple[str, ...] = ("dl", "tabular", "radiomics", "survival")
#: What a model may read, and what each input is.
INPUTS: dict[str, str] = {
    "pre_images": "the pre-ablation DICOM series and tumour ROI (the crops)",
    "post_images": "the 1-month post-ablation DICOM series and ablation-zone ROI (the crops)",
    "clinical": "the five clinical predictors",
    "signature": "the DL signature the study chose for its fusion models (Pre or PrePost)",
    "margin": "the ablative-margin features (post DP registered onto pre DP)",
    "radiomics": "radiomics features of the registered pre-ablation phases (tumour and rings)",
    "radiomics_post": "radiomics features of the registered post-ablation phases (ablation "
    "zone and rings)",
    "radiomics_signature": "the Radiomics_PrePost signature (its score) that Radiomics_Clinical "
    "fuses with the clinical predictors",
}
#: Inputs that exist only with a post-ablation series (the Radiomics_PrePost signature reads
#: the post-ablation features).
POST_INPUTS: frozenset[str] = frozenset(
    {"post_images", "margin", "radiomics_post", "radiomics_signature"}
)
#: The inputs read from the radiomics features (the bundle then holds the pyradiomics
#: parameter file :data:`RADIOMICS_PARAMS`).
RADIOMICS_INPUTS: frozenset[str] = frozenset({"radiomics", "radiomics_post"})
#: The radiomics model whose score is the input ``radiomics_signature``
#: (:data:`recur.radiomics.model.FUSED`).
RADIOMICS_FUSED = "Radiomics_PrePost"
#: The pyradiomics parameter file of a bundle with radiomics models (bundle-relative).
RADIOMICS_PARAMS = "radiomics_params.yaml"
#: The files of a model of each kind, in its bundle folder.
KIND_FILES: dict[str, tuple[str, ...]] = {
    "dl": ("weights.pt", "model.json", "recalibration.json"),
    "tabular": ("model.skops", "manifest.json"),
    "radiomics": ("model.skops", "manifest.json"),
    "survival": COX_MODEL_FILES,
}
#: Every binary model the study can evaluate: ``{name: (kind, inputs)}``, in the evaluation
#: order (:data:`recur.constants.MODELS_PAPER_ORDER`, the margin models, then the radiomics
#: models). A Cox model of the same predictors exists for each of the first six (kind
#: ``survival``, same inputs).
CATALOGUE: dict[str, tuple[str, tuple[str, ...]]] = {
    "Clinical": ("tabular", ("clinical",)),
    "Pre": ("dl", ("pre_images",)),
    "PrePost": ("dl", ("pre_images", "post_images")),
    "DL_Clinical": ("tabular", ("clinical", "signature")),
    "Clinical_Margin": ("tabular", ("clinical", "margin")),
    "DL_Clinical_Margin": ("tabular", ("clinical", "signature", "margin")),
    "Radiomics_Pre": ("radiomics", ("radiomics",)),
    "Radiomics_PrePost": ("radiomics", ("radiomics", "radiomics_post")),
    "Radiomics_Clinical": ("tabular", ("clinical", "radiomics_signature")),
}
#: The file beside DL_Clinical that names the chosen signature (bundle-relative).
CHOICE_FILE = "models/DL_Clinical/choice.json"
#: A model not scored for a patient: the reason shown in its place.
NO_POST = "not available: no post-ablation series"


@dataclass(frozen=True)
class ModelEntry:
    """One model of a bundle."""

    name: str
    kind: str
    inputs: tuple[str, ...]
    #: whether it reads the post-ablation series (directly, through the margin, or through a
    #: PrePost signature)
    needs_post: bool

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"model {self.name}: kind {self.kind!r}; expected one of {KINDS}")
        unknown = [i for i in self.inputs if i not in INPUTS]
        if unknown:
            raise ValueError(f"model {self.name}: unknown input(s) {unknown}")

    @property
    def key(self) -> str:
        """Unique within a bundle: the name, ``survival/<name>`` for a Cox model."""
        return f"survival/{self.name}" if self.kind == "survival" else self.name

    @property
    def folder(self) -> str:
        """Its bundle folder (relative)."""
        return f"models/{self.key}"

    @property
    def files(self) -> list[str]:
        """Its files in the bundle (relative)."""
        return [f"{self.folder}/{f}" for f in KIND_FILES[self.kind]]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "inputs": list(self.inputs),
            "needs_post": self.needs_post,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> ModelEntry:
        return cls(str(d["name"]), str(d["kind"]), tuple(d["inputs"]), bool(d["needs_post"]))


def needs_post(inputs: Iterable[str], signature: str) -> bool:
    """Whether a model reading ``inputs`` needs the post-ablation series, the fusion models'
    signature being ``signature``'s."""
    inputs = set(inputs)
    if inputs & POST_INPUTS:
        return True
    return "signature" in inputs and "post_images" in CATALOGUE[signature][1]


def study_entries(
    models: Sequence[str], cox_models: Sequence[str], signature: str
) -> list[ModelEntry]:
    """The entries of the study's binary ``models`` and of its Cox models ``cox_models`` (each
    a name of :data:`CATALOGUE`), ``signature`` being the DL model the fusion models use."""
    if signature not in DL_MODELS:
        raise ValueError(f"signature {signature!r}; expected one of {DL_MODELS}")
    unknown = [m for m in (*models, *cox_models) if m not in CATALOGUE]
    if unknown:
        raise ValueError(f"model(s) {unknown} are not in the catalogue of recur.deploy.registry")
    lacking = [
        m
        for m in models
        if "radiomics_signature" in CATALOGUE[m][1] and RADIOMICS_FUSED not in models
    ]
    if lacking:
        raise ValueError(f"{lacking} fuse the {RADIOMICS_FUSED} signature: list it too")
    out = []
    for m in models:
        kind, inputs = CATALOGUE[m]
        out.append(ModelEntry(m, kind, inputs, needs_post(inputs, signature)))
    for m in cox_models:
        _, inputs = CATALOGUE[m]
        out.append(ModelEntry(m, "survival", inputs, needs_post(inputs, signature)))
    return out


def uses_radiomics(entries: Iterable[ModelEntry]) -> bool:
    """Whether any of ``entries`` reads radiomics features (the bundle then holds
    :data:`RADIOMICS_PARAMS`)."""
    return any(set(e.inputs) & RADIOMICS_INPUTS for e in entries)


def workflow_sources(
    models: Sequence[str],
    cox_models: Sequence[str],
    results: str,
    signature_dir: str,
    radiomics_params: str | None = None,
) -> dict[str, str]:
    """``{bundle-relative path: workflow path}`` of every model file (the bundle rule's
    inputs): a DL network from ``models/<m>/<signature_dir>/`` and its recalibration from
    ``models/<m>/``; a tabular or radiomics model from ``models/<m>/``; a Cox model from
    ``models/survival/<m>/``; with a radiomics model, the pyradiomics parameter file
    ``radiomics_params`` (required then)."""
    out = {}
    for m in models:
        kind = CATALOGUE[m][0]
        for f in KIND_FILES[kind]:
            sub = signature_dir + "/" if kind == "dl" and f != "recalibration.json" else ""
            out[f"models/{m}/{f}"] = f"{results}/models/{m}/{sub}{f}"
    for m in cox_models:
        for f in KIND_FILES["survival"]:
            out[f"models/survival/{m}/{f}"] = f"{results}/models/survival/{m}/{f}"
    out[CHOICE_FILE] = f"{results}/{CHOICE_FILE}"
    if any(set(CATALOGUE[m][1]) & RADIOMICS_INPUTS for m in models):
        if radiomics_params is None:
            raise ValueError("radiomics models need the pyradiomics parameter file")
        out[RADIOMICS_PARAMS] = radiomics_params
    return out
