"""Open a local HTML page in headless Chromium (Debian's `chromium`, no browser download) and report
every <img> that did not load, judged by the browser itself (naturalWidth == 0)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images].map(i => ({src: i.getAttribute("src"), width: i.naturalWidth}));
  const out = document.createElement("pre"); out.id = "browser-probe"; out.textContent = JSON.stringify(images);
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str | None:
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def images_as_loaded(page: Path, browser: str) -> list[dict]:
    """[{src, width}] for every <img> of `page` once Chromium has loaded it."""
    probe = page.with_name(f".probe-{page.name}")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    try:
        dom = subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--allow-file-access-from-files",
                "--virtual-time-budget=10000",
                "--dump-dom",
                probe.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
    finally:
        probe.unlink()
    found = re.search(r'<pre id="browser-probe">(.*?)</pre>', dom, re.DOTALL)
    assert found, f"the probe did not run in {browser}"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def local_links(page: Path) -> list[str]:
    """Relative href/src targets of the page (external links are not followed)."""
    text = page.read_text(encoding="utf-8")
    targets = re.findall(r'(?:href|src)="([^"#]+)"', text)
    return [t for t in targets if not re.match(r"^[a-z]+:", t)]
