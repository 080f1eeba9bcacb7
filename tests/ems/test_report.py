"""ems.report: the typical week, the plots as PNG and the self-contained HTML page."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pandas as pd

from ems.report import PLOTS, typical_week, write_report
from ems.study import run_study

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


def test_typical_week_is_the_median_whole_week():
    idx = pd.date_range(pd.Timestamp("2024-03-03", tz="Asia/Tokyo"), periods=48 * 29, freq="30min")  # Sun + 4 weeks
    load = np.ones(len(idx))
    week = 48 * 7
    for k, level in enumerate([5.0, 1.0, 3.0, 2.0]):   # Mondays 4, 11, 18, 25 March
        load[48 + k * week:48 + (k + 1) * week] = level
    w = typical_week(idx, load)
    assert idx[w.start] == pd.Timestamp("2024-03-18", tz="Asia/Tokyo") and w.stop - w.start == week
    short = typical_week(idx[:100], load[:100])
    assert (short.start, short.stop) == (0, 100)


def test_report_has_every_plot_as_png_and_embedded(tmp_path):
    data = tmp_path / "office.csv"
    pd.read_csv(ROOT / "configs/data/office-2024-30min.csv").iloc[48 * 63:48 * 65].to_csv(data, index=False)
    summary, results = run_study([(str(ROOT / "configs/office-v2b.yaml"), str(data))], strategies=["none", "oracle"],
                                 out=None, workers=1)
    written = write_report(results, summary, tmp_path / "out")
    page = (tmp_path / "out" / "report.html").read_text()
    assert written[0].name == "report.html"
    for name in PLOTS:
        png = tmp_path / "out" / f"office-v2b--config--{name}.png"
        assert png.read_bytes().startswith(PNG)
        assert base64.b64encode(png.read_bytes()).decode()[:200] in page
    assert page.count("<img") == len(PLOTS)
    assert "Chubu high-voltage A" in page and "<td>oracle</td>" in page and "100.0 %" in page
