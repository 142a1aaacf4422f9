"""Repository-wide conventions that no single linter covers."""

from __future__ import annotations

import pathlib
import subprocess

REPO = pathlib.Path(__file__).resolve().parent.parent
MAX_COLUMNS = 120
# Hash-locked requirement files are written by pip-compile, not by people.
GENERATED = {"bot/requirements.txt", "requirements/dev.txt", "requirements/checkov.txt"}


def tracked_text_files() -> list[pathlib.Path]:
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    files = []
    for name in listing.decode().split("\0"):
        path = REPO / name
        if not name or name in GENERATED or not path.is_file():
            continue
        head = path.read_bytes()[:4096]
        if b"\0" not in head:
            files.append(path)
    return files


def test_every_line_fits_in_120_columns():
    """Code, configuration, templates and documents stay within 120 columns (URLs excepted)."""
    too_long = []
    for path in tracked_text_files():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if len(line) > MAX_COLUMNS and "://" not in line:
                too_long.append(f"{path.relative_to(REPO)}:{number}: {len(line)} columns")
    assert not too_long, "\n".join(too_long)


def test_scripts_are_executable():
    """Every script the Makefile and CI call can be run directly."""
    for script in ["scripts/setup", "scripts/test", "scripts/lock", ".ci/run"]:
        assert (REPO / script).stat().st_mode & 0o111, f"{script} is not executable"
