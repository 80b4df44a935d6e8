"""The page's files ship with the package: setup.cfg's package data names every one of them, so
an install from a clean clone (not only this editable checkout) serves the page."""

from __future__ import annotations

import configparser
import fnmatch
from pathlib import Path

import retrain

ROOT = Path(retrain.__file__).resolve().parents[1]


def test_every_file_of_the_page_is_package_data():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    patterns = [p.strip() for p in config["options.package_data"]["retrain.api"].replace("\n", ",").split(",") if p.strip()]
    page = ROOT / "retrain" / "api" / "page"
    files = [path.relative_to(page.parent).as_posix() for path in page.iterdir()]
    assert {"page/index.html", "page/app.js", "page/style.css"} <= set(files)
    assert [name for name in files if not any(fnmatch.fnmatch(name, p) for p in patterns)] == []
