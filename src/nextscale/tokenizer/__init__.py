from .quantizer import MultiScaleQuantizer
from .vqvae import PATCH_NUMS_256, PATCH_NUMS_512, VQVAE, VQVAEConfig, VQVAEOutput

__all__ = ["MultiScaleQuantizer", "PATCH_NUMS_256", "PATCH_NUMS_512", "VQVAE", "VQVAEConfig", "VQVAEOutput"]
