"""Packaging: the LICENSE pyproject declares, console scripts that run the tools, and
tools/*.py --help that answers without loading torch and shows its whole description."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib

import pytest
from test_train_support import REPO

from detector.cli import TOOLS

HELP_TOOLS = ("train", "test", "infer", "make_gt_bin", "visualize", "waymo_eval",
              "analyze_detections", "demo")
_PROBE = ("import runpy, sys\n"
          "sys.argv = [sys.argv[1], '--help']\n"
          "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
          "except SystemExit as e:\n    code = e.code\n"
          "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', code, file=sys.stderr)\n")


def test_license_and_console_scripts():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert meta["license"] == "Apache-2.0"
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    scripts = meta["scripts"]
    assert {"graddrop-train", "graddrop-test", "graddrop-infer", "graddrop-convert"} <= set(scripts)
    import detector.cli as cli
    for name, target in scripts.items():
        module, func = target.split(":")
        assert module == "detector.cli" and callable(getattr(cli, func)), name
        assert (REPO / "tools" / f"{TOOLS[name]}.py").is_file(), name
        assert getattr(cli, func).__name__ == TOOLS[name], f"{name} runs the wrong tool"


def test_run_tool_runs_the_tools_main(capsys):
    from detector.cli import run_tool
    with pytest.raises(SystemExit) as e:
        run_tool("make_gt_bin", ["--help"])
    assert e.value.code == 0 and "official ground-truth file" in capsys.readouterr().out
    assert run_tool("no_such_tool", []) == 2


@pytest.mark.parametrize("tool", HELP_TOOLS)
def test_help_without_torch_and_whole_description(tool):
    path = REPO / "tools" / f"{tool}.py"
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(path)], capture_output=True,
                          text=True, timeout=120, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stderr.strip().splitlines()[-1] == "NO-TORCH 0", proc.stderr[-2000:]
    doc = ast.get_docstring(ast.parse(path.read_text()))
    first = " ".join(doc.split("\n\n")[0].split())            # the first paragraph, whole
    assert first in " ".join(proc.stdout.split()), f"{tool} --help cuts its description"
