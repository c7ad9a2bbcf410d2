"""The detector: voxel encoders, spconv 3D backbone, BEV neck, GradDrop-fed centre head.

Importing this package registers every model component in ``detector.registry.MODELS``
(``VoxelDataPreprocessor``, ``MeanVFE``, ``DynamicMeanVFE``, ``SparseEncoder``,
``SECONDFPN``, ``CenterHead``, ``CenterPointDetector``). Topology and conventions:
docs/ARCHITECTURE.md; GradDrop placement: docs/GRADDROP.md ("Placement in the detector").
"""
from detector.models.types import HeadOutputs, VoxelBatch
from detector.models.data_preprocessor import VoxelDataPreprocessor
from detector.models.voxel_encoders import DynamicMeanVFE, MeanVFE
from detector.models.backbone_3d import SparseEncoder
from detector.models.neck import SECONDFPN
from detector.models.center_head import CenterHead
from detector.models.detector import CenterPointDetector

__all__ = ["VoxelBatch", "HeadOutputs", "VoxelDataPreprocessor", "MeanVFE", "DynamicMeanVFE",
           "SparseEncoder", "SECONDFPN", "CenterHead", "CenterPointDetector"]
