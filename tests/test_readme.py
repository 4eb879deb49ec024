"""README's commands and examples stay true."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_embedding_example_is_examples_embed_py_verbatim() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert (ROOT / "examples" / "embed.py").read_text() in blocks


def test_readme_web_app_example_is_examples_web_app_py_verbatim() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert (ROOT / "examples" / "web_app.py").read_text() in blocks  # run by tests/test_web_app_example.py


def test_embedding_example_runs_offline() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "embed.py")], capture_output=True, text=True, timeout=120, cwd="/"
    )
    assert result.returncode == 0, result.stderr
    assert "[tool call_1 -> 5]" in result.stdout
    assert "turn completed: '2 + 3 = 5.'" in result.stdout


def test_readme_test_command_is_the_ci_command() -> None:
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    test_command = blocks[1].strip()
    assert test_command == "pip install -e '.[test,ray]' && python -m pytest"
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()
    assert (
        blocks[0]
        .strip()
        .startswith("python3 -m venv .venv && . .venv/bin/activate && pip install -e . && agent-kernel exec")
    )


def test_readme_host_testing_example_is_verbatim_and_passes() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    example = ROOT / "examples" / "test_my_host.py"
    assert example.read_text() in blocks
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-o", "addopts=", "-q", "-p", "no:cacheprovider", str(example)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
