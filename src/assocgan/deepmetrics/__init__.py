"""Deep-feature metrics in plain torch, from weights the user already has (never downloaded): LPIPS and DISTS
(per-image perceptual distances), FID and KID (set-level, on feature vectors) and pytorch-fid's InceptionV3 for
their features. See docs/metrics.md.

The backbones are written here with torchvision's layer layout rather than imported: torchvision does not import
beside the supported torch, and the lpips, piq and pyiqa packages depend on it.
"""

from .backbones import VGG16, AlexNet, L2Pooling, load_torchvision
from .distances import DISTS, LPIPS
from .fid import fid, fid_warning, frechet_distance, kernel_inception_distance, statistics
from .inception import FEATURE_DIM, FIDInception
from .sets import InceptionFeatures, SetMeasure
from .weights import find_weights

__all__ = [
    "AlexNet",
    "DISTS",
    "FEATURE_DIM",
    "FIDInception",
    "InceptionFeatures",
    "L2Pooling",
    "LPIPS",
    "SetMeasure",
    "VGG16",
    "fid",
    "fid_warning",
    "find_weights",
    "frechet_distance",
    "kernel_inception_distance",
    "load_torchvision",
    "statistics",
]
