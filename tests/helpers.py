"""Test models and volumes shared by the segmentation tests (``from tests.helpers import ...``)."""

from __future__ import annotations

import torch


class BrightDetector(torch.nn.Module):
    """A fixed 1x1 convolution: electrode where one channel's windowed intensity exceeds ``level``.

    With the default window (-1000, 4000) HU, ``level`` 0.6 is 2000 HU: a known 'model' whose
    answer a test can predict.
    """

    def __init__(self, in_channels: int = 1, channel: int = 0, level: float = 0.6, gain: float = 60.0):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, 2, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            self.conv.weight[1, channel] = gain
            self.conv.bias[1] = -gain * level

    def forward(self, x):
        return self.conv(x)


def bright_model(preprocessing, **kwargs) -> BrightDetector:
    """A :class:`BrightDetector` carrying ``preprocessing`` as a loaded checkpoint's network does."""
    model = BrightDetector(**kwargs)
    model.cochseg3d_preprocessing = preprocessing
    return model
