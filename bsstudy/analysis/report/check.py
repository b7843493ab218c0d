"""Look at report.html as a person would: load it in headless Chromium, check that every figure loaded
(an <img> that failed to decode has naturalWidth 0), and optionally take a screenshot.

`python -m bsstudy.analysis.report.check <report.html or sweep folder> [--screenshot out.png]` exits 1 when an
image is broken or none loaded. Chromium: Debian's `chromium` package (or $CHROMIUM).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Runs on the load event, after every image has loaded or failed; --dump-dom then prints the result.
PROBE = """<script>window.addEventListener("load", () => {
  const images = Array.from(document.images).map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0,
    width: i.naturalWidth, height: i.naturalHeight}));
  const out = document.createElement("pre"); out.id = "bsstudy-image-check";
  out.textContent = JSON.stringify(images); document.body.appendChild(out);
});</script>"""
RESULT = re.compile(r'<pre id="bsstudy-image-check">(.*?)</pre>', re.S)


def chromium() -> str:
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise FileNotFoundError("no chromium found: install Debian's `chromium` package or set $CHROMIUM")
    return found


def run_chromium(args: list[str], profile: str, timeout: int) -> subprocess.CompletedProcess:
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def check_images(html_path: str | Path, timeout: int = 60) -> list[dict]:
    """[{alt, ok, width, height}] for every <img> of the page after it loaded in headless Chromium."""
    html_path = Path(html_path).resolve()
    page = html_path.read_text()
    page = page.replace("</body>", PROBE + "</body>") if "</body>" in page else page + PROBE
    with tempfile.TemporaryDirectory() as profile:
        probe_copy = html_path.with_name(f".check-{html_path.name}")  # beside it: relative image paths still work
        try:
            probe_copy.write_text(page)
            proc = run_chromium(["--virtual-time-budget=10000", "--dump-dom", probe_copy.as_uri()], profile, timeout)
        finally:
            probe_copy.unlink(missing_ok=True)
    match = RESULT.search(proc.stdout)
    if not match:
        raise RuntimeError(f"chromium printed no image check (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def screenshot(
    html_path: str | Path, out: str | Path, width: int = 1280, height: int = 4000, timeout: int = 60
) -> Path:
    """A PNG of the first `height` pixels of the page at `width` pixels wide."""
    out = Path(out).resolve()
    with tempfile.TemporaryDirectory() as profile:
        proc = run_chromium(
            [
                f"--screenshot={out}",
                f"--window-size={width},{height}",
                "--virtual-time-budget=10000",
                Path(html_path).resolve().as_uri(),
            ],
            profile,
            timeout,
        )
    if not out.exists():
        raise RuntimeError(f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bsstudy.analysis.report.check", description=__doc__.split("\n")[0])
    parser.add_argument("path", type=Path, help="report.html, or a sweep folder (its report/report.html)")
    parser.add_argument("--screenshot", type=Path, help="also save a screenshot here")
    parser.add_argument("--height", type=int, default=4000, help="screenshot height in pixels")
    args = parser.parse_args(argv)
    html_path = args.path if args.path.suffix == ".html" else args.path / "report" / "report.html"
    images = check_images(html_path)
    broken = [i["alt"] for i in images if not i["ok"]]
    print(
        f"{html_path}: {len(images)} images, {len(images) - len(broken)} loaded"
        + (f", broken: {', '.join(broken)}" if broken else "")
    )
    if args.screenshot:
        print(f"screenshot: {screenshot(html_path, args.screenshot, height=args.height)}")
    return 1 if broken or not images else 0


if __name__ == "__main__":
    sys.exit(main())
