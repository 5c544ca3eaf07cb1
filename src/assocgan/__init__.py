"""assocgan: continual learning of image-to-image translation.

One generator learns a sequence of paired translation tasks without keeping the
old tasks' data. The flagship method is Assoc-GAN (mapping memory + continual
distillation); the baselines it is compared against share one training loop.
"""

__version__ = "0.1.0"
