"""report.html from a tiny real run, checked in a real (headless Chromium) browser."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from jaxcnn.commands import report as report_command
from jaxcnn.report import write_report

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
SCREENSHOT_SIZE = (1280, 2400)

# Injected at the top of a COPY of the page: records script errors, console.error
# calls and failed resources (error events do not bubble, so listen in the capture
# phase), then after `load` writes the verdict on every <img> into the DOM for
# --dump-dom to print.
CHECK_SCRIPT = """<script>
window.__problems = [];
window.addEventListener("error", function (event) {
  var target = event.target || {};
  window.__problems.push(event.message || ("failed to load " + (target.src || target.href)));
}, true);
var originalError = console.error;
console.error = function () {
  window.__problems.push("console.error: " + Array.prototype.join.call(arguments, " "));
  originalError.apply(console, arguments);
};
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var result = {
    images: images.length,
    undecoded: images.filter(function (img) { return !(img.complete && img.naturalWidth > 0); })
                     .map(function (img) { return img.alt; }),
    widths: images.map(function (img) { return img.naturalWidth; }),
    problems: window.__problems
  };
  var out = document.createElement("pre");
  out.id = "browser-check";
  out.textContent = JSON.stringify(result);
  document.body.appendChild(out);
});
</script>"""


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def run_chromium(
    chromium: str, page: Path, profile: Path, *extra: str
) -> subprocess.CompletedProcess:
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        # Any attempt to reach the network fails, so a page that needed it would show it.
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=10000",
        *extra,
        page.absolute().as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def report(tiny_digits_run) -> Path:
    return write_report(tiny_digits_run["workdir"])


def test_report_is_one_self_contained_page(report):
    text = report.read_text(encoding="utf-8")
    assert report.name == "report.html"
    anchors = ("overview", "curves", "confusion", "mistakes", "filters", "feature-maps", "model")
    for anchor in (*anchors, "config"):
        assert f'id="{anchor}"' in text, anchor
    # Every image is embedded; nothing points at the network or at other files.
    sources = re.findall(r'<img[^>]*src="([^"]*)"', text)
    assert len(sources) == 7  # curves, confusion, mistakes, filters, 3 x feature maps
    assert all(src.startswith("data:image/png;base64,") for src in sources)
    assert not re.search(r'(src|href)="(https?:)?//', text)
    assert "<link" not in text and "<script" not in text
    assert "digits_cnn" in text  # the config table
    assert "conv1" in text and "trainable" in text  # the model summary table
    log_lines = (report.parent / "metrics.jsonl").read_text().splitlines()
    verdict = json.loads(next(line for line in log_lines if '"diagnosis"' in line))["verdict"]
    assert 'class="verdict"' in text and html.escape(verdict) in text
    # Which parameters each number is of: the pictures' checkpoint, and the final ones.
    results = json.loads((report.parent / "results.json").read_text())
    best, latest = results["best_step"], results["latest_step"]
    assert f"<td>best / latest step</td><td>{best} / {latest}</td>" in text
    assert re.search(r"checkpoint &#x27;best&#x27;: step \d+ \(epoch \d+\), test accuracy", text)
    assert "test_accuracy (final parameters)" in text and "test_eval_s" not in text
    leftovers = [p.name for p in report.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []  # written atomically


@pytest.mark.browser
def test_report_in_headless_chromium(report, tmp_path):
    chromium = find_chromium()
    if chromium is None:
        pytest.skip(
            "headless Chromium not found (tried " + ", ".join(CHROMIUM_NAMES) + "); install "
            "Debian's package with `apt-get install -y chromium` (.ci/run does when root)"
        )
    text = report.read_text(encoding="utf-8")
    checked = report.parent / "report_checked.html"
    checked.write_text(text.replace("<head>", "<head>" + CHECK_SCRIPT, 1), encoding="utf-8")

    dumped = run_chromium(chromium, checked, tmp_path / "profile1", "--dump-dom")
    match = re.search(r'<pre id="browser-check">(.*?)</pre>', dumped.stdout, re.S)
    assert match, f"no check result in the DOM; chromium stderr:\n{dumped.stderr[-3000:]}"
    result = json.loads(html.unescape(match.group(1)))
    assert result["images"] == 7
    assert result["undecoded"] == []
    assert all(width > 0 for width in result["widths"])
    assert result["problems"] == []

    screenshot = tmp_path / "report.png"
    size = f"--window-size={SCREENSHOT_SIZE[0]},{SCREENSHOT_SIZE[1]}"
    shot = run_chromium(chromium, report, tmp_path / "profile2", f"--screenshot={screenshot}", size)
    console = [line for line in shot.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == [], console  # the untouched page logs nothing to the console
    with Image.open(screenshot) as image:
        assert image.size == SCREENSHOT_SIZE
        colours = image.convert("L").getextrema()
    assert colours[0] < colours[1]  # not a blank page


def test_report_command(report, capsys, tmp_path):
    # Runs after the browser test: it rewrites report.html, smaller (no feature maps).
    argv = [str(report.parent), "--feature-images", "0", "--max-misclassified", "4"]
    assert report_command.main([*argv, "--images", str(tmp_path / "pictures")]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {report}"
    assert report.read_text().count("<img") == 4  # the filters stay: they need no image
    exported = sorted(p.name for p in (tmp_path / "pictures").iterdir())
    assert exported == [
        "confusion_matrix.png",
        "filters.png",
        "misclassified.png",
        "training_curves.png",
    ]
    with Image.open(tmp_path / "pictures" / "training_curves.png") as curves:
        assert curves.size == (1100, 440)
    assert report_command.main([str(report.parent / "missing")]) == 1
    assert "no metrics.jsonl" in capsys.readouterr().err


def test_write_report_rejects_a_non_workdir(tmp_path):
    with pytest.raises(FileNotFoundError, match="no metrics.jsonl"):
        write_report(tmp_path)
