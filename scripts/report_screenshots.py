"""Screenshots of the HTML report with headless Chromium (Debian package ``chromium``).

The front page, then three sections: each is shown by opening the report with one line of
JavaScript appended that asks the report's own app to display one result (as a click in its
menu would), so the pictures are what a reader sees.

    python scripts/report_screenshots.py results/report.html docs/screenshots

Writes ``front.png`` and one PNG per entry of :data:`SECTIONS` (1400 x 1100 pixels).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

#: picture name -> (menu category, subcategory, end of the result's path)
SECTIONS = {
    "table2.png": ("2 Evaluation", "1 Tables", "tables/table2.html"),
    "survival_td_auc.png": ("3 Survival", "2 Figures", "figures/survival/td_auc_external.png"),
    "roc_external.png": ("2 Evaluation", "2 ROC", "figures/roc/external.png"),
}
WINDOW = "1400,1100"


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("headless Chromium not found: apt-get install chromium")


def _shot(browser: str, page: Path, out: Path) -> None:
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size={WINDOW}",
            "--virtual-time-budget=8000",
            f"--screenshot={out}",
            page.resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )


def _section_page(report: str, category: str, subcategory: str, suffix: str) -> str:
    """The report with a script that opens one result once the app has started."""
    script = (
        "<script>window.addEventListener('load', () => setTimeout(() => {"
        f"const key = Object.keys(results).find(k => k.endsWith({json.dumps(suffix)}));"
        "const entry = results[key];"
        "const kind = entry.mime_type.startsWith('image/') ? 'img' : 'html';"
        f"app.setView({{navbarMode: 'subcategory', category: {json.dumps(category)},"
        f" subcategory: {json.dumps(subcategory)}, content: kind, contentPath: entry.data_uri}});"
        "}, 500));</script>"
    )
    return report.replace("</body>", script + "</body>")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path)
    ap.add_argument("outdir", type=Path)
    a = ap.parse_args()
    browser = _chromium()
    a.outdir.mkdir(parents=True, exist_ok=True)
    _shot(browser, a.report, a.outdir / "front.png")
    text = a.report.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (category, subcategory, suffix) in SECTIONS.items():
            page = Path(tmp) / "report.html"
            page.write_text(_section_page(text, category, subcategory, suffix), encoding="utf-8")
            _shot(browser, page, a.outdir / name)
    print(f"wrote {1 + len(SECTIONS)} screenshots to {a.outdir}")


if __name__ == "__main__":
    main()
