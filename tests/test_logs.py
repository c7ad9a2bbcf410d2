"""Quiet, readable terminal output (detector/engine/logs.py, detector/registry.py): a tiny training
run through tools/train.py prints no registry-scope warnings, no library-internal warnings, no
config dump / environment / hook table (those stay in the log file), and its progress bar never
runs into a log line."""
from __future__ import annotations

import logging
import os
import re
import subprocess
import sys

from test_train_support import REPO, TINY_CONFIG, tiny_data_root

NOISE = ("Failed to search registry with scope",      # mmengine, one per registry tree
         "non-tuple sequence for multidimensional",   # spconv's own PyTorch deprecation
         "is_fx_tracing",                             # torch.fx, called by spconv
         '"FileClient" will be deprecated', '"HardDiskBackend" is the alias',
         "System environment:", "Config:", "Hooks will be executed")


def test_tiny_training_terminal_is_quiet_and_bars_do_not_interleave(tmp_path_factory, tmp_path):
    root = tiny_data_root(tmp_path_factory)
    work = tmp_path / "work"
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "train.py"), str(TINY_CONFIG), "--work-dir",
         str(work), "--data-root", str(root), "--cfg-options", "train_cfg.max_epochs=1"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_WAIT_POLICY": "PASSIVE"})
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:]
    for noise in NOISE:
        assert noise not in out, f"{noise!r} printed on the terminal"
    assert "Epoch(train) [1][2/2]" in out and "OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1" in out
    # the table says what it measured, and breakdowns without ground truth have no AP
    assert ("Waymo 3D detection metrics on ground truth with BEV centre in x [-25.6, 25.6) m, "
            "y [-25.6, 25.6) m") in out
    assert re.search(r"RANGE_TYPE_VEHICLE_\[50, \+inf\)_LEVEL_1 +- +- +0\n", out)
    assert "train:" in out, "the config's progress bar is gone: the interleaving check is void"
    # stdout and stderr on one stream, as a terminal shows them: every log line starts on a
    # fresh line (after the bar was cleared), never glued to a bar's text (terminal control
    # sequences such as tqdm's cursor-up move the cursor, they print nothing)
    for line in re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", out).split("\n"):
        for segment in line.split("\r"):
            if " - mmengine - " in segment:
                assert re.match(r"\s*\d\d/\d\d \d\d:\d\d:\d\d - mmengine - ", segment), segment
    # the log file keeps everything
    (log,) = work.glob("*/*.log")
    text = log.read_text()
    for kept in ("System environment:", "Config:", "Hooks will be executed", "Epoch(train)"):
        assert kept in text, f"{kept!r} missing from the log file"


def test_console_handler_filters_and_verbose_shows_the_config(capsys):
    from detector.engine.logs import ConsoleHandler

    def emitted(handler, msg, level=logging.INFO):
        rec = logging.LogRecord("mmengine", level, __file__, 1, msg, None, None)
        if handler.filter(rec):
            handler.emit(rec)
        return capsys.readouterr().out

    quiet, verbose = ConsoleHandler(), ConsoleHandler(verbose=True)
    assert emitted(quiet, "Config:\nmodel = dict()") == ""
    assert emitted(verbose, "Config:\nmodel = dict()") == "Config:\nmodel = dict()\n"
    assert emitted(verbose, '"FileClient" will be deprecated in future.') == ""
    assert emitted(quiet, "Epoch(train) [1][1/2]") == "Epoch(train) [1][1/2]\n"
    # writes to the stdout of the moment (capsys swaps it per test)
    assert quiet.stream is sys.stdout
