"""Zero-shot in-painting, out-painting and class-conditional editing."""

from .edit import EditOutput, edit, prepare_images
from .masks import MODES, box_region, feathered_blend, keep_masks_for, region_on_token_grid, scale_keep_masks

__all__ = [
    "EditOutput",
    "MODES",
    "box_region",
    "edit",
    "feathered_blend",
    "keep_masks_for",
    "prepare_images",
    "region_on_token_grid",
    "scale_keep_masks",
]
