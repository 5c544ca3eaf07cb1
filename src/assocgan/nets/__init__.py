"""Networks: the U-Net generator, the conditional PatchGAN discriminator, the mapping-memory mapper."""
from .patchgan import PatchGAN
from .unet import UNet, init_weights

__all__ = ["UNet", "PatchGAN", "init_weights"]
