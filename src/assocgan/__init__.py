"""assocgan: continual learning of image-to-image translation.

One generator learns a sequence of paired translation tasks without keeping the
old tasks' data. The flagship method is Assoc-GAN (mapping memory + continual
distillation); the baselines it is compared against share one training loop.
"""

__version__ = "0.1.0"


def load_generator(run_dir, method, after_task=None, task=None):
    """The generator ``method`` trained in the run folder ``run_dir`` (see ``assocgan.checkpoints.load_generator``)."""
    from .checkpoints import load_generator as load

    return load(run_dir, method, after_task, task)


__all__ = ["__version__", "load_generator"]
