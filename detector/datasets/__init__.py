"""Datasets: Waymo I/O (``waymo``), converted-data access (``converted``)."""
