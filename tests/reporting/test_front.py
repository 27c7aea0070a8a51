"""The report's front page (recur.reporting.front) on small hand-made tables."""

from __future__ import annotations

import pandas as pd

from recur.reporting import front


def _table2() -> pd.DataFrame:
    rows = []
    for model, auc in (("Clinical", 0.61), ("PrePost", 0.83), ("DL_Clinical", 0.80)):
        rows.append(
            {
                "cohort": "external",
                "model": model,
                "metric": "auc",
                "estimate": auc,
                "ci_low": auc - 0.1,
                "ci_high": auc + 0.05,
                "n": 35,
                "n_events": 7,
            }
        )
    return pd.DataFrame(rows)


def _delong() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "cohort": "external",
                "model_a": "Clinical",
                "model_b": "PrePost",
                "diff": -0.22,
                "p": 0.0004,
            },
            {
                "cohort": "training",
                "model_a": "Clinical",
                "model_b": "PrePost",
                "diff": 0.1,
                "p": 0.5,
            },
        ]
    )


def test_headline_names_the_best_model_and_its_comparison_with_clinical():
    h = front.headline(_table2(), _delong())
    assert (h["n"], h["n_events"], h["best"]) == (35, 7, "PrePost")
    assert ("PrePost", "0.830 [0.730, 0.880]") in h["aucs"]
    # Clinical - PrePost = -0.22, so PrePost - Clinical = +0.22
    assert h["comparison"] == "PrePost vs Clinical: AUC difference +0.220 (DeLong p < 0.001)"


def test_flagged_patients_and_the_montage_selection():
    qc = pd.DataFrame(
        {
            "patient_id": ["P1", "P1", "P2", "P3"],
            "timepoint": ["pre", "post", "pre", "pre"],
            "flags": ["", "PS moved > 10 mm", "", ""],
        }
    )
    ex = pd.DataFrame(
        {"patient_id": ["P9"], "stage": ["convert"], "timepoint": ["pre"], "reason": ["bad"]}
    )
    flagged = front.flagged_patients(qc, ex)
    assert flagged["patient_id"].tolist() == ["P9", "P1"]
    assert flagged["reason"].tolist() == ["excluded at convert: bad", "PS moved > 10 mm"]
    patients = [f"P{i}" for i in range(1, 30)]
    chosen = front.montage_selection(flagged, patients, 5, seed=0)
    assert {"P1", "P9"} <= set(chosen)
    assert len(chosen) == 2 + 5
    assert chosen == front.montage_selection(flagged, patients, 5, seed=0)  # reproducible
    capped = front.montage_selection(flagged, patients, 0, seed=0, max_flagged=1)
    assert capped == ["P1"]  # P9 is not among the patients with a picture


def test_front_page_holds_the_tables_and_the_flags(tmp_path):
    png = tmp_path / "f.png"
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1])
    fig.savefig(png)
    plt.close(fig)
    page = front.front_page(
        pd.DataFrame({"variable": ["Patients"], "train": [12]}),
        "<table><tr><td>T2</td></tr></table>",
        _table2(),
        _delong(),
        pd.DataFrame({"patient_id": ["P1"], "timepoint": ["post"], "reason": ["PS moved"]}),
        {"Figure 1": png, "missing": tmp_path / "none.png"},
    )
    assert "Table 1" in page
    assert "<td>T2</td>" in page
    assert "data:image/png;base64," in page
    assert page.count("<figure>") == 1
    assert "QC-flagged patients (1)" in page


def test_a_model_below_chance_on_the_tuning_split_is_flagged():
    from recur.deploy.predict import below_chance_flag

    tune = pd.DataFrame(
        [
            {
                "cohort": "tuning",
                "model": "Pre",
                "metric": "auc",
                "estimate": 0.47,
                "ci_low": 0.3,
                "ci_high": 0.6,
                "n": 51,
                "n_events": 12,
            }
        ]
    )
    h = front.headline(pd.concat([_table2(), tune]), _delong())
    assert h["below_chance"] == [
        "Pre: tuning AUC 0.47 < 0.5 (it ranked the tuning patients worse than chance; its "
        "cutoff and external results are not to be used)"
    ]
    assert below_chance_flag("Pre", 0.47).startswith("tuning AUC 0.47 < 0.5")
    assert below_chance_flag("Pre", 0.5) == ""
    assert below_chance_flag("Pre", None) == ""


def test_report_pictures_are_rgb_and_at_most_the_report_width():
    from PIL import Image

    wide = front.report_picture(Image.new("RGBA", (1600, 400)), width=800)
    assert (wide.mode, wide.size) == ("RGB", (800, 200))  # aspect kept
    narrow = front.report_picture(Image.new("L", (300, 100)), width=800)
    assert (narrow.mode, narrow.size) == ("RGB", (300, 100))  # never enlarged
