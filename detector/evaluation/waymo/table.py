"""Text table of Waymo detection metrics, in the spirit of the official
``compute_detection_metrics_main`` output (one line per breakdown with AP and APH)."""
from __future__ import annotations


def format_metrics_table(result: dict, title: str | None = None) -> str:
    """Render ``compute_detection_metrics`` output: per type and level, then by range.

    Rows follow the order of ``result`` (the official breakdown order); columns are the
    breakdown name, AP, APH and the number of ground truths at that level. A breakdown without
    ground truth has no AP (the official tool reports 0 there): it shows "-".
    """
    width = max([len(n) for n in result] + [len("Breakdown")])
    header = f"{'Breakdown':<{width}}  {'AP':>8}  {'APH':>8}  {'#GT':>7}"
    lines = [title] if title else []
    section = None
    for name, m in result.items():
        kind = "by type" if name.startswith("OBJECT_TYPE") else "by range"
        if kind != section:
            if section is not None:
                lines.append("")
            lines += [header, "-" * len(header)]
            section = kind
        if m["num_gt"] == 0:
            lines.append(f"{name:<{width}}  {'-':>8}  {'-':>8}  {0:7d}")
        else:
            lines.append(f"{name:<{width}}  {m['AP']:8.4f}  {m['APH']:8.4f}  {m['num_gt']:7d}")
    return "\n".join(lines)
