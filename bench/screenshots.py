"""Screenshots of the daemon's web page for the README (issue 12): ``docs/screenshots/*.png``.

The office site's daemon (``ems run``'s service: the simulator over loopback Modbus TCP, SQLite in a
temporary directory) runs in-process twice on one store, as ``ems run`` would after a restart: first
at ``--speed`` (default 1800x) from 06:00 on Tuesday 2024-07-09 to ``--at`` (12:40), so that today's
chart has a morning of metered load, PV and cars; then at 10x from where it stopped (the simulated
cars and meter carried over), serving the page, with two overrides set through the API (the Leaf
leaves at 17:00 with 90 %, no V2B from the Leaf 40 until 15:00) and a plan made with them. Headless
Chromium (Debian's ``chromium`` and ``chromium-driver`` under Selenium; ``fonts-noto-cjk`` for the
Japanese labels) opens the page at phone width (390 x 844, mobile emulation: its first screen) and
desktop width (1280 x 900: the whole page), in English and Japanese, and saves
``page-{phone,desktop}-{en,ja}.png``, reduced to a 256-colour palette with Pillow when it is
installed (each well under 300 KB). Prints one JSON object: each file with its size. About 30 s.

Usage: .venv/bin/python bench/screenshots.py [--out docs/screenshots] [--speed X] [--at HH:MM]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ems.clock import SimClock  # noqa: E402
from ems.config import SiteConfig  # noqa: E402
from ems.daemon import Service  # noqa: E402
from ems.store import Store  # noqa: E402
from tests.ems.http_helpers import (CHROMIUM, DESKTOP, DRIVER, PHONE, TOKEN, RunningDaemon,  # noqa: E402
                                    headless_chromium, http_site, request, wait_for)

DAY = pd.Timestamp("2024-07-09T06:00+09:00")   # Tuesday: the three cars arrive from 08:30, the building peaks by day
OVERRIDES = [{"kind": "departure", "vehicle": "leaf", "depart": "2024-07-09T17:00+09:00", "target_soc_pct": 90,
              "by": "tanaka"},
             {"kind": "pause-v2b", "vehicle": "leaf40", "until": "2024-07-09T15:00+09:00", "by": "facility"}]
SIZES = {"phone": PHONE, "desktop": DESKTOP}


def morning(cfg: SiteConfig, until: pd.Timestamp, speed: float) -> None:
    """The daemon from DAY to ``until`` at ``speed`` (the store keeps what it metered and planned)."""
    async def main() -> None:
        svc = Service(cfg, clock=SimClock(DAY, speed), initial_soc_pct=60)
        async with svc:
            await svc.serve(until)
    asyncio.run(main())


def carry_on(cfg: SiteConfig, speed: float) -> Service:
    """The second run, from where the first stopped: its clock at the stored time, and the simulated
    site as the first run left it (the cars' SOC, the meter's import counter), as the real site would
    be across a restart of the daemon."""
    with Store(cfg.daemon.database) as store:
        now, soc, window = (store.get_state(k) for k in ("now", "soc_kwh", "window"))
    svc = Service(cfg, clock=SimClock(pd.Timestamp(now).ceil("s"), speed), initial_soc_pct=60)
    assert svc.sim is not None
    capacity = {v.id: v.capacity_kwh for v in cfg.vehicles}
    for vid, kwh in (soc or {}).items():
        svc.sim.sim.set_soc(vid, 100 * kwh / capacity[vid])
    if window and window.get("counter_kwh") is not None:
        svc.sim.sim.model.import_kwh = window["counter_kwh"]
    return svc


def png(browser, width: int, height: int, whole: bool) -> bytes:
    """The page in a ``width`` x ``height`` viewport as PNG bytes: its first screen, or the ``whole`` page."""
    full = browser.execute_script("return document.documentElement.scrollHeight") if whole else height
    shot = browser.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": whole,
        "clip": {"x": 0, "y": 0, "width": width, "height": max(full, height), "scale": 1}})
    return base64.b64decode(shot["data"])


def small(data: bytes) -> bytes:
    """``data`` as a 256-colour palette PNG (Pillow; unchanged without it)."""
    try:
        from PIL import Image
    except ImportError:
        return data
    img = Image.open(io.BytesIO(data)).convert("RGB")
    img = img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    return out.getvalue() if out.tell() < len(data) else data


def shoot(url: str, out: Path) -> dict[str, int]:
    """Each language at each width: the page once its live parts are filled in; {file: bytes}."""
    from selenium.webdriver.common.by import By

    written: dict[str, int] = {}
    browser = headless_chromium(*DESKTOP)
    try:
        text = lambda css: browser.find_element(By.CSS_SELECTOR, css).text   # noqa: E731
        for lang in ("en", "ja"):
            for name, (w, h) in SIZES.items():
                browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                        {"width": w, "height": h, "deviceScaleFactor": 1, "mobile": name == "phone"})
                browser.get(f"{url}?lang={lang}")
                wait_for(lambda: "kWh" in text("#w-kwh") and text("#clock"), what="the demand figures")
                wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#chart-svg svg path"), what="the chart")
                wait_for(lambda: "%" in text("#car-rows") and browser.find_elements(By.CSS_SELECTOR, "#ov-list li")
                     and browser.find_elements(By.CSS_SELECTOR, "#ev-list li"), what="the cars, overrides and events")
                time.sleep(1.5)   # one more poll: every figure drawn
                path = out / f"page-{name}-{lang}.png"
                path.write_bytes(small(png(browser, w, h, whole=name == "desktop")))
                written[str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)] = path.stat().st_size
    finally:
        browser.quit()
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    ap.add_argument("--speed", type=float, default=1800.0, help="simulated seconds per real second until --at")
    ap.add_argument("--at", default="12:40", help="the simulated time of day of the screenshots (HH:MM, after 09:00)")
    args = ap.parse_args()
    if CHROMIUM is None or DRIVER is None:
        sys.exit("headless Chromium is not installed: apt-get install chromium chromium-driver fonts-noto-cjk")
    at = pd.Timestamp(f"{DAY:%Y-%m-%d}T{args.at}+09:00")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = http_site(Path(tmp), "office-v2b")
        t0 = time.monotonic()
        morning(cfg, at, args.speed)
        svc = carry_on(cfg, 10.0)
        with RunningDaemon(svc, at + pd.Timedelta(hours=6)) as url:
            wait_for(lambda: svc.daemon is not None and svc.daemon.plan is not None, timeout_s=60,
                     what="the first plan after the restart")
            ids = []
            for body in OVERRIDES:
                code, _, answer = request(url + "api/overrides", body, token=TOKEN)
                assert code == 201, answer
                ids.append(json.loads(answer)["override"]["id"])
            wait_for(lambda: set(ids) <= set(svc.store.last_plan()["inputs"].get("overrides") or []),
                     what="a plan made with the overrides")
            written = shoot(url, args.out)
    print(json.dumps({"at": at.isoformat(), "speed": args.speed, "seconds": round(time.monotonic() - t0, 1),
                      "files": written}, indent=2))


if __name__ == "__main__":
    main()
