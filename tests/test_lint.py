"""Static checks with ruff's rule families named in pyproject.toml (pyflakes, syntax errors,
bugbear, pyupgrade, simplify) anywhere in the code base."""
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    result = subprocess.run([ruff, "check", "portal", "kubesim", "craterctl", "tests", "bench", "scripts", "app.py"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
