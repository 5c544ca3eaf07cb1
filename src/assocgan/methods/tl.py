"""TL: sequential fine-tuning, the lower bound. Each task starts from the previous task's weights and
nothing else is kept."""

from .base import Method


class TL(Method):
    name = "tl"
    title = "TL"
    cite = "sequential fine-tuning (lower bound)"
