"""Untrusted artefacts are loaded safely; model files hold no patient ids.

A crafted pickle whose unpickling would write a marker file is placed where the workflow
expects a model; the loaders refuse it with a RecurError and the marker never appears. Each
crafted file is first shown to be live (plain ``pickle``/``torch.load(weights_only=False)``
does write the marker), so the tests fail if the loaders ever fall back to unsafe loading.
"""

from __future__ import annotations

import builtins
import json
import pickle
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from recur.constants import CLINICAL_FEATURES
from recur.errors import RecurError
from recur.io import sha256
from recur.models import jobs, tabular, train


class _WritesMarker:
    """Unpickling this object runs ``exec`` that writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def _tiny_net_dir(tmp_path: Path) -> Path:
    """A model dir with a real model.json and weights.pt of a tiny Pre network."""
    config = train.TrainConfig.defaults(widths=[4, 4, 8, 8], gru_hidden=4, dropout=0.0)
    arch = config.architecture("Pre")
    d = tmp_path / "Pre" / "full"
    d.mkdir(parents=True)
    torch.save(arch.build().state_dict(), d / "weights.pt")
    (d / "model.json").write_text(json.dumps(asdict(arch)))
    return d


def test_real_weights_load(tmp_path: Path):
    model, arch = jobs.load_model(_tiny_net_dir(tmp_path))
    assert arch.model == "Pre"
    assert not model.training


def test_crafted_torch_pickle_is_refused_and_never_runs(tmp_path: Path):
    d = _tiny_net_dir(tmp_path)
    marker = tmp_path / "marker_torch"
    state = torch.load(d / "weights.pt", weights_only=True)
    torch.save({**state, "payload": _WritesMarker(marker)}, d / "weights.pt")
    with pytest.raises(RecurError, match="cannot load the trained model"):
        jobs.load_model(d)
    assert not marker.exists(), "the crafted pickle ran"
    # control: the crafted file is live, an unsafe load would have run it
    torch.load(d / "weights.pt", weights_only=False)
    assert marker.exists()


def _fitted_model(tmp_path: Path, estimator: str = "extra_trees") -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    features = list(CLINICAL_FEATURES)
    data = pd.DataFrame(rng.normal(size=(30, 5)), columns=features).abs()
    data.iloc[3, 2] = np.nan
    y = np.r_[np.zeros(15), np.ones(15)]
    settings = tabular.TabularSettings.defaults(estimator=estimator, n_estimators=5, spline_knots=4)
    model = settings.pipeline(features).fit(data.to_numpy(), y)
    path, manifest = tmp_path / "model.skops", tmp_path / "manifest.json"
    tabular.save_model(model, path, manifest, features=list(CLINICAL_FEATURES), settings=settings)
    return path, manifest


def _rewrite_manifest(path: Path, manifest: Path) -> None:
    """Make the manifest match the (crafted) file, as an attacker with write access could."""
    info = json.loads(manifest.read_text())
    info["sha256"] = sha256(path)
    manifest.write_text(json.dumps(info))


@pytest.mark.parametrize("estimator", ["extra_trees", "logistic"])
def test_real_skops_model_loads(tmp_path: Path, estimator: str):
    """Both estimators (the logistic one with splines: every type it stores) load."""
    path, manifest = _fitted_model(tmp_path, estimator)
    model = tabular.load_model(path, manifest)
    assert hasattr(model, "predict_proba")


def test_tampered_skops_file_is_refused_by_its_sha256(tmp_path: Path):
    path, manifest = _fitted_model(tmp_path)
    with path.open("ab") as f:
        f.write(b"\0")
    with pytest.raises(RecurError, match="sha256 differs"):
        tabular.load_model(path, manifest)


def test_pickle_posing_as_skops_is_refused_and_never_runs(tmp_path: Path):
    path, manifest = _fitted_model(tmp_path)
    marker = tmp_path / "marker_pickle"
    path.write_bytes(pickle.dumps(_WritesMarker(marker)))
    _rewrite_manifest(path, manifest)
    with pytest.raises(RecurError, match=path.name):
        tabular.load_model(path, manifest)
    assert not marker.exists(), "the crafted pickle ran"
    pickle.loads(path.read_bytes())  # control: the payload is live
    assert marker.exists()


def test_skops_file_with_untrusted_type_is_refused_and_never_runs(tmp_path: Path):
    """A well-formed skops archive whose schema asks for ``builtins.exec`` is refused."""
    path, manifest = _fitted_model(tmp_path)
    marker = tmp_path / "marker_skops"
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    schema = json.loads(members["schema.json"])
    # replace the top-level object by a reduce-style call of exec with the payload
    schema.update(
        {
            "__class__": "exec",
            "__module__": "builtins",
            "__loader__": "FunctionNode",
            "content": {"module_path": "builtins", "function": "exec"},
        }
    )
    members["schema.json"] = json.dumps(schema).encode()
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    _rewrite_manifest(path, manifest)
    with pytest.raises(RecurError, match="untrusted types"):
        tabular.load_model(path, manifest)
    assert not marker.exists()


@pytest.mark.slow
def test_model_files_hold_no_patient_ids(tiny_run: Path):
    """Weights, skops models and their JSON side files never contain a patient id."""
    from .test_deidentification import member_blobs

    patients = pd.read_csv(tiny_run / "results" / "cohort" / "patients.csv")["patient_id"]
    models = tiny_run / "results" / "models"
    files = [
        p
        for p in models.rglob("*")
        if p.is_file()
        and (p.suffix in {".pt", ".skops"} or p.name in {"model.json", "manifest.json"})
    ]
    assert any(p.suffix == ".pt" for p in files)
    assert any(p.suffix == ".skops" for p in files)
    hits = []
    for f in files:
        for label, blob in member_blobs(f):
            for pid in patients:
                if pid.encode() in blob:
                    hits.append(f"{f.relative_to(tiny_run)}[{label}]: {pid}")
    assert not hits, hits
