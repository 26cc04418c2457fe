"""End to end: the report opens in headless Chromium, draws every chart, raises no error, isn't blank.

Uses the fake study of ``test_report`` (written through the store's API); the page's own script
counts figures (``<html data-figures>``), drawn charts (``data-plotted``) and errors (``data-errors``,
set by ``window.onerror``, unhandled rejections and ``console.error``), and ``--dump-dom`` shows them.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from mnistlab.report.html import write_report
from test_report import STUDY, fake_images, make_study

pytestmark = pytest.mark.browser
SHOT = os.environ.get("MNISTLAB_REPORT_SCREENSHOT")  # keep the screenshot here, to look at it


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if found := shutil.which(name):
            return found
    pytest.skip("chromium not installed: apt-get install -y chromium "
                "(make test installs it where apt is available)")


def headless(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", f"--user-data-dir={tmp / 'chromium-profile'}", "--virtual-time-budget=15000"]
    return subprocess.run([chromium(), *flags, *args], capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    fake_images(tmp / "data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MNISTLAB_DATA", str(tmp / "data"))
        path = write_report(make_study(tmp), STUDY, tmp / "demo.html")
    return tmp, path


def dump_dom(tmp: Path, path: Path) -> tuple[str, str, str]:
    """The DOM after scripts ran, its <html> start tag (the page's markers), and Chromium's log."""
    done = headless(tmp, "--enable-logging=stderr", "--v=0", "--dump-dom", path.resolve().as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, re.search(r"<html[^>]*>", done.stdout).group(0), done.stderr


def test_charts_render_without_errors(page):
    tmp, path = page
    figures = len(re.findall(r'<div class="plot" ', path.read_text(encoding="utf-8")))
    dom, root, log = dump_dom(tmp, path)
    assert "data-errors" not in root, re.search(r'data-error-messages="([^"]*)"', root)
    assert f'data-figures="{figures}"' in root and f'data-plotted="{figures}"' in root, root
    assert dom.count("js-plotly-plot") >= figures  # plotly's class on every drawn chart div
    assert dom.count('<svg class="main-svg"') >= figures
    assert "<script>alert(1)" not in dom and "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert "Uncaught" not in log, [line for line in log.splitlines() if "CONSOLE" in line]


def test_error_marker_catches_errors(page):
    """The check above can fail: a page with a broken script is marked."""
    tmp, path = page
    broken = tmp / "broken.html"
    text = path.read_text(encoding="utf-8")
    broken.write_text(text.replace("<footer", "<script>notDefined();</script><footer", 1), encoding="utf-8")
    _, root, log = dump_dom(tmp, broken)
    assert 'data-errors="1"' in root and "notDefined" in root
    assert "Uncaught ReferenceError" in log


def test_screenshot_is_not_blank(page):
    tmp, path = page
    shot = Path(SHOT) if SHOT else tmp / "report.png"
    done = headless(tmp, f"--screenshot={shot}", "--window-size=1280,4000", path.resolve().as_uri())
    assert shot.exists(), done.stderr[-2000:]
    pixels = decode_png(shot.read_bytes())
    assert pixels.shape[:2] == (4000, 1280)
    rgb = pixels[:, :, :3].astype(np.int64) // 8  # 5 bits per channel
    colours = np.unique((rgb[:, :, 0] << 10) | (rgb[:, :, 1] << 5) | rgb[:, :, 2])
    assert len(colours) > 200, len(colours)  # text, charts, bands and badges; a blank page has a few
    assert (pixels[:, :, :3] < 100).mean() > 0.002  # some dark ink (text, lines)


def decode_png(data: bytes) -> np.ndarray:
    """8-bit RGB/RGBA/grey PNG (Chromium's screenshots) to a (height, width, channels) array."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,), tag = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        header = struct.unpack(">IIBBBBB", body) if tag == b"IHDR" else header
        idat += body if tag == b"IDAT" else b""
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and interlace == 0, header
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, 1 + width * channels)
    return unfilter(rows, channels).reshape(height, width, channels)


def unfilter(rows: np.ndarray, bpp: int) -> np.ndarray:
    """Undo PNG's per-row filters: None, Sub and Up with numpy, Average and Paeth byte by byte."""
    out = np.zeros((rows.shape[0], rows.shape[1] - 1), np.uint8)
    prior = np.zeros(rows.shape[1] - 1, np.uint8)
    for y, row in enumerate(rows):
        kind, line = int(row[0]), row[1:]
        if kind == 0:
            out[y] = line
        elif kind == 1:  # Sub: a running sum per channel
            out[y] = (np.cumsum(line.reshape(-1, bpp), axis=0, dtype=np.int64).ravel() % 256).astype(np.uint8)
        elif kind == 2:  # Up
            out[y] = line + prior  # uint8 wraps around, as PNG wants
        else:
            out[y] = np.frombuffer(_sequential(line.tobytes(), prior.tobytes(), bpp, kind), np.uint8)
        prior = out[y]
    return out


def _sequential(line: bytes, prior: bytes, bpp: int, kind: int) -> bytes:
    out = bytearray(line)
    for i in range(len(out)):
        a = out[i - bpp] if i >= bpp else 0
        b = prior[i]
        if kind == 3:  # Average
            out[i] = (out[i] + ((a + b) >> 1)) & 255
            continue
        c = prior[i - bpp] if i >= bpp else 0  # Paeth
        p = a + b - c
        pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
        out[i] = (out[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    return bytes(out)


@pytest.fixture(scope="module")
def real_page(tmp_path_factory, mnist):
    """A small real study trained and reported through the CLI, as a user would."""
    import subprocess
    import sys
    import textwrap
    chromium()  # skip before training when there is no browser
    tmp = tmp_path_factory.mktemp("real")
    study = tmp / "real.toml"
    study.write_text(textwrap.dedent("""\
        name = "real"
        description = "two MLPs, one swept over the learning rate, 2 repeats"
        repeats = 2
        [train]
        epochs = 2
        train_size = 2000
        test_size = 500
        [[model]]
        name = "mlp"
        layers = ["Dense(32, activation='relu')", "Dropout(0.2)", "Dense(10, activation='softmax')"]
        sweep = { "optimizer.learning_rate" = [0.001, 0.01] }
        [[model]]
        name = "linear"
        layers = ["Dense(10, activation='softmax')"]
        """))
    cli = [sys.executable, "-m", "mnistlab.cli"]
    subprocess.run([*cli, "run", str(study), "-q"], check=True, capture_output=True, timeout=600)
    subprocess.run([*cli, "report", str(study), "-o", str(tmp / "real.html")], check=True, capture_output=True,
                   timeout=600)
    return tmp, tmp / "real.html"


def test_real_study_report_renders_every_chart(real_page):
    tmp, path = real_page
    html = path.read_text(encoding="utf-8")
    figures = len(re.findall(r'<div class="plot" ', html))
    assert figures >= 8  # curves per row, overlays, sweep, violins, confusions
    dom, root, log = dump_dom(tmp, path)
    assert "data-errors" not in root, re.search(r'data-error-messages="([^"]*)"', root)
    assert f'data-plotted="{figures}"' in root, root
    assert "Uncaught" not in log
    shot = tmp / "real.png"
    done = headless(tmp, f"--screenshot={shot}", "--window-size=1280,3000", path.resolve().as_uri())
    assert done.returncode == 0 and shot.stat().st_size > 50_000  # a drawn page, not a blank one
