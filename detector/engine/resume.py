"""Which checkpoint ``--resume`` continues from, when the newest one may be broken.

A run killed while writing (disk full, node lost) can leave a truncated last checkpoint. mmengine
would resume from it and stop with a raw ``zipfile`` / ``EOFError`` traceback although the
checkpoint of the epoch before is intact. torch checkpoints are zip archives with a CRC per
member, so "intact" is checked by reading every member against its CRC (``zipfile.testzip``,
about the cost of reading the file once), without unpickling anything.

- ``--resume`` (auto): the work dir's ``last_checkpoint`` if intact, else the newest intact
  ``epoch_N.pth`` / ``iter_N.pth`` with a warning naming the broken file(s).
- ``--resume PATH``: that file; if it is broken, fail naming it and the intact ones.
"""
from __future__ import annotations

import re
import warnings
import zipfile
from pathlib import Path

__all__ = ["CheckpointError", "checkpoint_problem", "list_checkpoints", "resolve_resume",
           "newest_intact_checkpoint"]

_NAME = re.compile(r"^(epoch|iter)_(\d+)\.pth$")


class CheckpointError(RuntimeError):
    """No usable checkpoint where one was asked for; the message names the files."""


def checkpoint_problem(path) -> str | None:
    """None when ``path`` is a readable, complete torch zip checkpoint; else what is wrong."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        return f"cannot read it ({e.strerror})"
    if size == 0:
        return "it is empty (0 bytes)"
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
            if bad is not None:
                return f"member {bad!r} fails its CRC check"
            if not any(n.endswith("data.pkl") for n in z.namelist()):
                return "it is a zip file but not a torch checkpoint (no data.pkl)"
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        return f"it is truncated or not a torch checkpoint ({size} bytes: {e})"
    return None


def list_checkpoints(work_dir) -> list[Path]:
    """``epoch_N.pth`` / ``iter_N.pth`` in ``work_dir``, oldest first (epoch files before iter
    files of the same run are not mixed: the number orders each kind, mtime breaks ties)."""
    found = []
    for p in Path(work_dir).glob("*.pth"):
        m = _NAME.match(p.name)
        if m:
            found.append((int(m.group(2)), p.stat().st_mtime, p))
    return [p for _, _, p in sorted(found)]


def newest_intact_checkpoint(work_dir) -> Path | None:
    """The newest checkpoint of ``work_dir`` that passes :func:`checkpoint_problem`."""
    for p in reversed(list_checkpoints(work_dir)):
        if checkpoint_problem(p) is None:
            return p
    return None


def _last_checkpoint(work_dir: Path) -> Path | None:
    marker = work_dir / "last_checkpoint"
    if not marker.is_file():
        return None
    text = marker.read_text().strip()
    if not text:
        return None
    p = Path(text)
    # a copied work dir keeps the old absolute path: prefer the file of the same name here
    if not p.is_file() and (work_dir / p.name).is_file():
        p = work_dir / p.name
    return p


def resolve_resume(work_dir, requested: str | bool | None) -> Path | None:
    """The checkpoint to resume from (None: nothing to resume, start from scratch).

    ``requested``: True / "auto" for the work dir's newest, or an explicit path.
    """
    if not requested:
        return None
    work_dir = Path(work_dir)
    if requested is not True and requested != "auto":
        path = Path(requested)
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        intact = [str(p) for p in list_checkpoints(path.parent) if checkpoint_problem(p) is None]
        raise CheckpointError(
            f"--resume {path}: {problem}. Intact checkpoints beside it: "
            f"{', '.join(intact) if intact else 'none'}")
    candidates = list_checkpoints(work_dir)
    last = _last_checkpoint(work_dir)
    if last is not None and last not in candidates:
        candidates.append(last)
    if not candidates:
        return None
    broken = []
    order = ([last] if last is not None else []) + [p for p in reversed(candidates) if p != last]
    for p in order:
        problem = checkpoint_problem(p)
        if problem is None:
            if broken:
                warnings.warn(
                    "--resume: skipping broken checkpoint(s) " + "; ".join(
                        f"{b} ({why})" for b, why in broken) + f"; resuming from {p}", stacklevel=2)
            return p
        broken.append((p, problem))
    raise CheckpointError(
        f"--resume: no intact checkpoint in {work_dir}: " + "; ".join(
            f"{b} ({why})" for b, why in broken))
