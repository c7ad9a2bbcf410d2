"""Task layouts of the centre head: which branch's loss belongs to which task at the shared
activation (the unit the multitask gradient methods of ``ops.multitask`` combine).

``grouping``:
  ``"cls_box"``   (default) 2 tasks: every heatmap branch / every regression (+iou) branch
  ``"per_branch"`` one task per (group, branch)
  ``"per_group"``  one task per class group
  ``"per_group_cls_box"`` cls and box per class group (2 x groups tasks)
"""
from __future__ import annotations

from typing import Sequence

GROUPINGS = ("cls_box", "per_branch", "per_group", "per_group_cls_box")


def task_layout(grouping: str, group_names: Sequence[str], branch_names: Sequence[str]
                ) -> tuple[list[str], dict[tuple[int, str], int]]:
    """(task names, {(group index, branch name): task index}) for ``grouping``."""
    if grouping not in GROUPINGS:
        raise ValueError(f"task grouping must be one of {GROUPINGS}, got {grouping!r}")
    task_of: dict[tuple[int, str], int] = {}
    names: list[str] = []
    for g, gname in enumerate(group_names):
        for b in branch_names:
            kind = "cls" if b == "heatmap" else "box"
            if grouping == "cls_box":
                key = kind
            elif grouping == "per_branch":
                key = f"{gname}/{b}"
            elif grouping == "per_group":
                key = gname
            else:
                key = f"{gname}/{kind}"
            if key not in names:
                names.append(key)
            task_of[(g, b)] = names.index(key)
    return names, task_of
