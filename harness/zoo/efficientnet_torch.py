"""torch modules of the EfficientNet recipes, apart so that importing the zoo does not import torch.

Saved models pickle a reference to these classes (torch.save of the whole
module), so they must stay importable under this name.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

#: EfficientNet-Lite's own input normalisation: (pixel - 127) / 128, pixel in [0, 255]
LITE_MEAN, LITE_STD = 127.0, 128.0


class FashionEfficientNet(torch.nn.Module):
    """Frozen EfficientNet-Lite0 features + a linear head, on raw Fashion-MNIST images.

    Input: (N, 28, 28, 1) float32 in [0, 1] (the layout the Fashion-MNIST data
    set and the Keras CNN use). Resized to `resolution`, repeated to RGB and
    normalised inside the graph, so every format gets the same raw input.
    """

    def __init__(self, backbone, resolution: int):
        super().__init__()
        self.backbone = backbone
        self.resolution = int(resolution)

    def preprocess(self, image):
        x = image.permute(0, 3, 1, 2)
        x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
        x = x.expand(-1, 3, -1, -1)  # grey -> RGB (litert-torch 0.10 mis-lowers repeat() here; expand converts)
        return x * (255.0 / LITE_STD) - (LITE_MEAN / LITE_STD)

    def features(self, image):
        """The pooled 1280-d features the head sees."""
        b = self.backbone
        return b._avg_pooling(b.extract_features(self.preprocess(image))).flatten(1)

    def forward(self, image):
        return self.backbone(self.preprocess(image))


class FeatureExtractor(torch.nn.Module):
    """`model.features` as a module's forward, to export the feature graph alone."""

    def __init__(self, model: FashionEfficientNet):
        super().__init__()
        self.model = model

    def forward(self, image):
        return self.model.features(image)
