import subprocess
import sys

from cochseg3d.utils import sanitize_case_id


def test_cli_help_lists_verbs():
    out = subprocess.run([sys.executable, "-m", "cochseg3d", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "COMMAND" in out.stdout


def test_sanitize_case_id_cannot_escape():
    for bad in ["../../etc/passwd", "a/b\\c", "..", "", " .hidden"]:
        s = sanitize_case_id(bad)
        assert "/" not in s and "\\" not in s and ".." not in s and not s.startswith(".")
        assert s
