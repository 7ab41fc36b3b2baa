"""The documentation: the site builds with ``mkdocs build --strict`` (a broken link, a missing
anchor or a page left out of the navigation fails it), and the README's links lead to files."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.conftest import ROOT


def test_the_site_builds_strict_with_every_page_in_the_navigation(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    for page in ("index.html", "techniques/prune/index.html", "benchmarks/vs-nncf/index.html"):
        assert (tmp_path / page).is_file(), page


def test_the_readme_links_lead_to_files_and_it_stays_short():
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", readme)
    assert targets, "the README links to the documentation"
    missing = [target for target in targets if not (ROOT / target).exists()]
    assert missing == []
    assert len(readme.splitlines()) < 400
