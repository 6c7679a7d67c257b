"""Image pre-processing for task scripts, where numpy and OpenCV cannot load.

Task scripts run in isolated sub-interpreters; this module imports neither numpy nor cv2,
so it works there. An image is a C-contiguous ``(H, W)`` or ``(H, W, C)`` array of uint8
or float32, passed as anything with the buffer protocol (a numpy array, a ``Tensor``, a
``memoryview(data).cast("B", (h, w, 3))`` over raw bytes) or an object whose ``.tensor``
attribute is a ``Tensor``. Every function returns a new image, never a view of its input.

The arithmetic follows OpenCV, since that is what most models were trained with. Measured
against opencv-python-headless 5.x (engine/tests/test_cv.py):

- ``resize``: uint8 bilinear and both nearest modes are bit-exact, except that uint8
  images of 2 or 5+ channels shrunk by exactly 2 in both axes are within 1 level (cv2
  switches those to INTER_AREA, which rounds ties to even). float32 bilinear is within
  5e-6 on [0, 1] images: cv2 rounds the sampling coordinates differently.
- ``cvt_color``: uint8 is bit-exact; float32 is within 1 ulp (gray) or 3e-5 degrees (hue).
- ``normalize``/``to_tensor`` compute ``(x / scale - mean) / std`` as one multiply-add,
  within 6e-7 of the exact value for ImageNet statistics.

Interpolation is not antialiased: like cv2's INTER_LINEAR, shrinking by more than 2 skips
pixels, so resize in steps (or accept aliasing) for large reductions.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from walle_engine import _core
from walle_engine._core import Tensor

__all__ = ["crop", "cvt_color", "flip", "letterbox", "normalize", "pad", "resize", "to_tensor"]

_INTERPOLATIONS = ("bilinear", "nearest", "nearest_exact")


def resize(img: object, size: Sequence[int], interpolation: str = "bilinear") -> Any:
    """Resize to ``size = (width, height)``: OpenCV's order, not numpy's ``(height, width)``.

    ``interpolation``:

    - ``"bilinear"``: cv2.INTER_LINEAR. Pixel centres are aligned (``src = (dst + 0.5) *
      in / out - 0.5``) and edge pixels replicate; uint8 rounds like OpenCV and saturates.
    - ``"nearest"``: cv2.INTER_NEAREST, ``src = floor(dst * in / out)``: top-left aligned,
      so the image shifts by up to half a source pixel; for pipelines that used it.
    - ``"nearest_exact"``: cv2.INTER_NEAREST_EXACT, ``src = floor((dst + 0.5) * in / out)``:
      pixel centres, the same result as PIL's and scikit-image's nearest.
    """
    width, height = _size(size, "resize")
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(
            f"resize: unknown interpolation {interpolation!r}: use one of {', '.join(_INTERPOLATIONS)}"
        )
    return _out(_core.cv_resize(_tensor(img), width, height, interpolation))


def crop(img: object, x: int, y: int, w: int, h: int) -> Any:
    """The ``w`` x ``h`` region whose top-left pixel is column ``x``, row ``y`` (a copy)."""
    t = _tensor(img)
    height, width, c = _dims(t, "crop")
    if w < 1 or h < 1:
        raise ValueError(f"crop: size must be positive, got w={w}, h={h}")
    if x < 0 or y < 0 or x + w > width or y + h > height:
        raise ValueError(
            f"crop: region x={x}, y={y}, w={w}, h={h} is outside the {width}x{height} image"
        )
    region = (0, (y * width + x) * c, 0, (h, w * c), (width * c, 1), (w * c, 1))
    return _out(_core.raster([t], [region], _shape(t, h, w)))


def flip(img: object, direction: str = "horizontal") -> Any:
    """Mirror left-right (``"horizontal"``, cv2.flip code 1), top-bottom (``"vertical"``,
    code 0) or both (``"both"``, code -1)."""
    t = _tensor(img)
    h, w, c = _dims(t, "flip")
    row = w * c
    # Channel-major regions, so the raster's inner loop runs along a whole row, not a pixel.
    regions = {
        "horizontal": (0, row - c, 0, (h, c, w), (row, 1, -c), (row, 1, c)),
        "vertical": (0, (h - 1) * row, 0, (h, row), (-row, 1), (row, 1)),
        "both": (0, h * row - c, 0, (h, c, w), (-row, 1, -c), (row, 1, c)),
    }
    if direction not in regions:
        raise ValueError(f"flip: unknown direction {direction!r}: use horizontal, vertical or both")
    return _out(_core.raster([t], [regions[direction]], t.shape))


def pad(img: object, top: int, bottom: int, left: int, right: int, value: float = 0) -> Any:
    """Add a constant border (cv2.copyMakeBorder with BORDER_CONSTANT and one value for
    every channel)."""
    t = _tensor(img)
    h, w, c = _dims(t, "pad")
    if min(top, bottom, left, right) < 0:
        raise ValueError(f"pad: widths must be >= 0, got {top}, {bottom}, {left}, {right}")
    if max(top, bottom, left, right) > _MAX_SIZE:
        raise ValueError(f"pad: widths must be at most 2**40, got {top}, {bottom}, {left}, {right}")
    if t.dtype == "uint8" and not 0 <= value <= 255:
        raise ValueError(f"pad: value {value} does not fit a uint8 image")
    out_w = w + left + right
    region = (0, 0, (top * out_w + left) * c, (h, w * c), (w * c, 1), (out_w * c, 1))
    return _out(_core.raster([t], [region], _shape(t, h + top + bottom, out_w), float(value)))


def letterbox(
    img: object, size: Sequence[int], value: float = 114, interpolation: str = "bilinear"
) -> tuple[Any, float, tuple[int, int]]:
    """Resize keeping the aspect ratio to fit ``size = (width, height)``, then centre it on
    a ``value`` background (the YOLO-style input). Returns ``(image, scale, (left, top))``;
    a point of the result maps back with ``x0 = (x - left) / scale``, ``y0 = (y - top) / scale``.
    """
    out_w, out_h = _size(size, "letterbox")
    t = _tensor(img)
    h, w, _ = _dims(t, "letterbox")
    scale = min(out_w / w, out_h / h)
    new_w, new_h = max(1, min(out_w, round(w * scale))), max(1, min(out_h, round(h * scale)))
    left, top = (out_w - new_w) // 2, (out_h - new_h) // 2
    resized = _core.cv_resize(t, new_w, new_h, interpolation)
    boxed = pad(resized, top, out_h - new_h - top, left, out_w - new_w - left, value)
    return boxed, scale, (left, top)


def cvt_color(img: object, code: str) -> Any:
    """Convert between colour layouts, like cv2.cvtColor with ``cv2.COLOR_<CODE>``.

    Codes (case-insensitive): ``rgb2bgr``, ``bgr2rgb``, ``rgba2bgra``, ``bgra2rgba``,
    ``rgba2rgb``, ``bgra2bgr``, ``rgba2bgr``, ``bgra2rgb``, ``rgb2rgba``, ``bgr2bgra``,
    ``rgb2bgra``, ``bgr2rgba``, ``gray2rgb``, ``gray2bgr``, ``gray2rgba``, ``gray2bgra``,
    ``rgb2gray``, ``bgr2gray``, ``rgba2gray``, ``bgra2gray``, ``rgb2hsv``, ``bgr2hsv``.

    Gray is ``0.299 R + 0.587 G + 0.114 B`` and comes out ``(H, W)``. An added alpha is
    opaque (255, or 1.0 for float32). HSV is OpenCV's: for uint8, H is degrees / 2 in
    [0, 180) and S, V are in [0, 255]; for float32, H is in [0, 360) and S in [0, 1].
    """
    return _out(_core.cv_cvt_color(_tensor(img), code.lower()))


def normalize(
    img: object,
    mean: float | Sequence[float] = 0.0,
    std: float | Sequence[float] = 1.0,
    scale: float | None = None,
) -> Any:
    """``(img / scale - mean[c]) / std[c]`` per channel, as float32 in the same HWC layout.

    ``scale`` defaults to 255 for uint8 images and 1 for float32, so ImageNet statistics
    (mean 0.485, 0.456, 0.406; std 0.229, 0.224, 0.225) apply directly to uint8 pixels.
    ``mean`` and ``std`` are one value for every channel or one per channel.
    """
    t = _tensor(img)
    c = _dims(t, "normalize")[2]
    return _out(_core.cv_normalize(t, *_affine(t, c, mean, std, scale, "normalize"), False, "hwc"))


def to_tensor(
    img: object,
    mean: float | Sequence[float] = 0.0,
    std: float | Sequence[float] = 1.0,
    scale: float | None = None,
    swap_rb: bool = False,
    batch: bool = False,
) -> Any:
    """A model input from an HWC image in one pass: float32 ``(C, H, W)``, or ``(1, C, H, W)``
    with ``batch=True``, holding ``(img / scale - mean[c]) / std[c]``.

    ``scale`` defaults to 255 for uint8 and 1 for float32 (torchvision's ToTensor).
    ``swap_rb=True`` swaps channels 0 and 2 on the way (an RGB model fed BGR pixels from
    cv2.imread, or the reverse); ``mean`` and ``std`` are in the output's channel order.
    """
    t = _tensor(img)
    c = _dims(t, "to_tensor")[2]
    affine = _affine(t, c, mean, std, scale, "to_tensor")
    return _out(_core.cv_normalize(t, *affine, swap_rb, "nchw" if batch else "chw"))


def _tensor(img: object) -> Tensor:
    if isinstance(img, Tensor):
        return img
    inner = getattr(img, "tensor", None)
    if isinstance(inner, Tensor):  # walle_engine.np arrays
        return inner
    try:
        return Tensor(img)
    except TypeError:
        raise TypeError(
            f"expected an image with the buffer protocol, got {type(img).__name__}"
        ) from None


def _out(t: Tensor) -> Any:
    # Every result leaves through here, so the return type changes in one place: a
    # walle_engine.np array once that module exists, a Tensor until then. Only its absence
    # falls back; a walle_engine.np that fails to import must not silently change the type.
    try:
        np = importlib.import_module("walle_engine.np")
    except ModuleNotFoundError as e:
        if e.name != "walle_engine.np":
            raise
        return t
    return np.asarray(t)


_MAX_SIZE = 2**40  # the engine's element limit: larger sizes are refused before any arithmetic


def _dims(t: Tensor, op: str) -> tuple[int, int, int]:
    if t.dtype not in ("uint8", "float32"):
        raise ValueError(f"{op}: images must be uint8 or float32, not {t.dtype}")
    if len(t.shape) not in (2, 3):
        raise ValueError(f"{op}: expected an (H, W) or (H, W, C) image, got shape {t.shape}")
    h, w, c = (*t.shape, 1)[:3]
    if not (h and w and c):
        raise ValueError(f"{op}: empty image of shape {t.shape}")
    return h, w, c


def _shape(t: Tensor, h: int, w: int) -> tuple[int, ...]:
    return (h, w, *t.shape[2:])


def _size(size: Sequence[int], op: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"{op}: size must be (width, height), got {size!r}") from None
    if width < 1 or height < 1:
        raise ValueError(f"{op}: size must be positive, got (width, height) = {size!r}")
    if width > _MAX_SIZE or height > _MAX_SIZE:
        raise ValueError(f"{op}: size must be at most 2**40, got (width, height) = {size!r}")
    return width, height


def _affine(
    t: Tensor,
    c: int,
    mean: float | Sequence[float],
    std: float | Sequence[float],
    scale: float | None,
    op: str,
) -> tuple[float, list[float], list[float]]:
    def per_channel(v: float | Sequence[float], name: str) -> list[float]:
        vals = [float(v)] * c if isinstance(v, int | float) else [float(x) for x in v]
        if len(vals) != c:
            raise ValueError(f"{op}: {name} has {len(vals)} values for {c} channels")
        return vals

    if scale is None:
        scale = 255.0 if t.dtype == "uint8" else 1.0
    return float(scale), per_channel(mean, "mean"), per_channel(std, "std")
