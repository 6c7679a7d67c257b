"""walle_engine.cv against OpenCV (what models are trained with), numpy, and tiny cases
worked out by hand; and uint8 as an engine dtype (cast, raster, and refusal elsewhere)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest
import walle_engine
from walle_engine import _core, cv, ops

RNG = np.random.default_rng(0)
CHANNELS = [None, 1, 3, 4]  # None: an (H, W) image
# (src h, src w, dst h, dst w): non-integer up and down ratios, mixed, exact 2x both ways.
SIZES = [
    (7, 9, 13, 17),
    (37, 29, 111, 87),
    (111, 87, 37, 29),
    (40, 30, 23, 61),
    (12, 10, 24, 20),
    (48, 36, 24, 18),
    (1, 5, 3, 2),
    (5, 1, 2, 4),
]
INTERPOLATIONS = ["bilinear", "nearest", "nearest_exact"]


@pytest.fixture(scope="module")
def cv2():
    # The reference; a dev dependency (pyproject.toml). Skips, reported by -ra, without it.
    return pytest.importorskip("cv2")


def arr(x: object) -> np.ndarray:
    """numpy view of a cv result (a Tensor now, a walle_engine.np array later)."""
    return np.asarray(getattr(x, "tensor", x))


def image(h: int, w: int, c: int | None, dtype: type) -> np.ndarray:
    shape = (h, w) if c is None else (h, w, c)
    if dtype == np.uint8:
        return RNG.integers(0, 256, shape, dtype=np.uint8)
    return RNG.random(shape, dtype=np.float32)


# ---- uint8 storage dtype ----------------------------------------------------------------


def test_uint8_tensors_share_memory_with_numpy_and_bytes() -> None:
    x = np.arange(12, dtype=np.uint8).reshape(3, 4)
    t = ops.tensor(x)
    assert t.dtype == "uint8" and np.asarray(t).ctypes.data == x.ctypes.data
    back = np.asarray(t)
    assert back.dtype == np.uint8 and back.ctypes.data == x.ctypes.data
    raw = memoryview(bytes(range(6))).cast("B", (2, 3))
    assert ops.tensor(raw).shape == (2, 3)
    assert memoryview(ops.tensor(raw)).tolist() == [[0, 1, 2], [3, 4, 5]]
    assert _core.Tensor.empty("uint8", [2]).dtype == "uint8"


@pytest.mark.parametrize("reference", [False, True])
def test_cast_to_and_from_uint8_follows_numpy(reference: bool) -> None:
    floats = (RNG.random(200) * 255).astype(np.float32)
    sources = {
        "float32": floats,
        "int32": RNG.integers(-1000, 1000, 200).astype(np.int32),
        "int64": RNG.integers(-(2**40), 2**40, 200),
        "bool": RNG.random(200) < 0.5,
        "uint8": RNG.integers(0, 256, 200).astype(np.uint8),
    }
    for x in sources.values():  # in range: truncation toward zero; integers wrap mod 256
        got = arr(ops.cast(x, "uint8", reference=reference))
        np.testing.assert_array_equal(got, x.astype(np.uint8))
    u = sources["uint8"]
    for dt in sources:
        np.testing.assert_array_equal(arr(ops.cast(u, dt, reference=reference)), u.astype(dt))
    # Out of range: what numpy gives on x86-64 (it converts through int32), pinned.
    odd = np.array([-1.5, 255.9, 256.0, 300.7, -300.0, -0.7, 3e9, np.nan, np.inf], np.float32)
    got = arr(ops.cast(odd, "uint8", reference=reference))
    assert got.tolist() == [255, 255, 0, 44, 212, 0, 0, 0, 0]


@pytest.mark.parametrize("reference", [False, True])
def test_raster_moves_one_byte_elements(reference: bool) -> None:
    x = RNG.integers(0, 256, (5, 7), dtype=np.uint8)
    transpose = (0, 0, 0, (7, 5), (1, 7), (5, 1))
    np.testing.assert_array_equal(
        arr(ops.raster([x], [transpose], (7, 5), reference=reference)), x.T
    )
    padded = arr(
        ops.raster([x], [(0, 0, 9 + 1, (5, 7), (7, 1), (9, 1))], (7, 9), 7, reference=reference)
    )
    np.testing.assert_array_equal(padded, np.pad(x, 1, constant_values=7))


def test_select_and_argmax_take_uint8() -> None:
    a = RNG.integers(0, 256, (4, 6), dtype=np.uint8)
    b = RNG.integers(0, 256, (4, 6), dtype=np.uint8)
    c = RNG.random((4, 6)) < 0.5
    for reference in (False, True):
        np.testing.assert_array_equal(
            arr(ops.select(c, a, b, reference=reference)), np.where(c, a, b)
        )
        got = arr(ops.argmax(a, 1, False, reference=reference))
        np.testing.assert_array_equal(got, a.argmax(1))


@pytest.mark.parametrize("reference", [False, True])
def test_arithmetic_on_uint8_is_refused_not_wrapped(reference: bool) -> None:
    u = np.array([[200, 100]], np.uint8)
    calls = [
        lambda: ops.unary("neg", u, reference=reference),
        lambda: ops.binary("add", u, u, reference=reference),
        lambda: ops.reduce("sum", u, [1], reference=reference),
        lambda: ops.matmul(u, np.ascontiguousarray(u.T), reference=reference),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"uint8|float32"):
            call()


def test_models_take_uint8_inputs_but_only_move_or_cast_them() -> None:
    def model(op: str, inputs: list, attrs: dict) -> _core.Model:
        names = [n for n, _, _ in inputs]
        graph = {"inputs": inputs, "outputs": ["y"], "constants": {}}
        return _core.Model(dict(graph, nodes=[(op, "n", names, ["y"], attrs)]), tune=False)

    x = np.array([[1, 2, 255], [0, 7, 8]], np.uint8)
    cast = model("Cast", [("x", "uint8", [2, 3])], {"to": 1})
    np.testing.assert_array_equal(arr(cast.run([ops.tensor(x)])[0]), x.astype(np.float32))
    relu = model("Relu", [("x", "uint8", [2, 3])], {})
    with pytest.raises(ValueError, match="uint8"):
        relu.run([ops.tensor(x)])
    with pytest.raises(ValueError, match="indices must be int32 or int64"):
        model("Gather", [("x", "float32", [4, 3]), ("i", "uint8", [2])], {"axis": 0})


# ---- resize -------------------------------------------------------------------------


def test_bilinear_2x2_to_4x4_by_hand() -> None:
    src = [[0, 40], [80, 120]]
    # Output pixel d sits at source coordinate (d + 0.5) * 2/4 - 0.5 = -0.25, 0.25, 0.75,
    # 1.25: the ends clamp to the edge pixels, the middle two mix the neighbours 3:1 and 1:3.
    w = [(1, 0), (0.75, 0.25), (0.25, 0.75), (0, 1)]
    expected = [
        [sum(wy[k] * wx[j] * src[k][j] for k in (0, 1) for j in (0, 1)) for wx in w] for wy in w
    ]
    assert expected == [[0, 10, 30, 40], [20, 30, 50, 60], [60, 70, 90, 100], [80, 90, 110, 120]]
    for dtype in (np.uint8, np.float32):
        got = arr(cv.resize(np.array(src, dtype), (4, 4)))
        assert got.dtype == dtype and got.tolist() == expected


def test_bilinear_uint8_rounds_half_up_and_saturates_by_hand() -> None:
    # 1x2 -> 1x4: coordinates -0.25, 0.25, 0.75, 1.25 give 0, 0.25, 0.75, 1 -> 0, 0, 1, 1.
    assert arr(cv.resize(np.array([[0, 1]], np.uint8), (4, 1))).tolist() == [[0, 0, 1, 1]]
    # 1x2 -> 1x3: the middle pixel sits at 0.5 exactly: 0.5 rounds up (OpenCV), not to even.
    assert arr(cv.resize(np.array([[0, 1]], np.uint8), (3, 1))).tolist() == [[0, 1, 1]]
    # Upscaling 255s stays 255 (the fixed-point weights may sum past 1: saturate).
    assert arr(cv.resize(np.full((3, 3), 255, np.uint8), (7, 5))).min() == 255


def test_same_size_is_a_copy() -> None:
    img = np.array([[0.5, np.inf], [-np.inf, 2.0]], np.float32)  # inf * weight 0 would be NaN
    for interpolation in INTERPOLATIONS:
        out = cv.resize(img, (2, 2), interpolation)
        np.testing.assert_array_equal(arr(out), img)
        assert arr(out).ctypes.data != img.ctypes.data


def test_nearest_modes_by_hand() -> None:
    row = np.array([[10, 20, 30, 40]], np.uint8)
    # nearest: floor(d * 4/3) = 0, 1, 2 (top-left aligned: the image shifts left).
    assert arr(cv.resize(row, (3, 1), "nearest")).tolist() == [[10, 20, 30]]
    # nearest_exact: floor((d + 0.5) * 4/3) = floor(0.67, 2, 3.33) = 0, 2, 3.
    assert arr(cv.resize(row, (3, 1), "nearest_exact")).tolist() == [[10, 30, 40]]


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("channels", CHANNELS)
def test_resize_matches_opencv(cv2, interpolation: str, dtype: type, channels: int | None) -> None:
    flag = {
        "bilinear": cv2.INTER_LINEAR,
        "nearest": cv2.INTER_NEAREST,
        "nearest_exact": cv2.INTER_NEAREST_EXACT,
    }[interpolation]
    for sh, sw, dh, dw in SIZES:
        img = image(sh, sw, channels, dtype)
        got = arr(cv.resize(img, (dw, dh), interpolation))
        ref = cv2.resize(img, (dw, dh), interpolation=flag).reshape(got.shape)
        assert got.shape == (dh, dw, *img.shape[2:]) and got.dtype == dtype
        if dtype == np.uint8 or interpolation != "bilinear":
            np.testing.assert_array_equal(got, ref, err_msg=str((sh, sw, dh, dw)))
        else:  # cv2 rounds float32 coordinates differently: measured max 7.6e-6 on [0, 1]
            np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5, err_msg=str((sh, sw, dh, dw)))


def test_resize_2x_shrink_of_two_channel_uint8_is_within_one_level(cv2) -> None:
    # cv2 shrinks exactly-2x images of 2 or 5+ channels with INTER_AREA, which rounds the
    # 2x2 mean half-to-even; bilinear (and cv2 for 1, 3, 4 channels) rounds half up.
    img = image(40, 60, 2, np.uint8)
    got, ref = arr(cv.resize(img, (30, 20))), cv2.resize(img, (30, 20))
    assert np.abs(got.astype(int) - ref).max() <= 1


def test_resize_is_the_same_on_one_thread_or_several(cv2) -> None:
    img = image(480, 640, 3, np.uint8)  # big enough to split across the pool
    before = walle_engine.num_threads()
    try:
        outs = []
        for n in (1, 2):
            walle_engine.set_num_threads(n)
            outs.append(arr(cv.resize(img, (300, 200))))
    finally:
        walle_engine.set_num_threads(before)
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[1], cv2.resize(img, (300, 200)))


# ---- colour -------------------------------------------------------------------------

CODES = [
    "rgb2bgr",
    "bgr2rgb",
    "rgba2bgra",
    "bgra2rgba",
    "rgba2rgb",
    "bgra2bgr",
    "rgba2bgr",
    "bgra2rgb",
    "rgb2rgba",
    "bgr2bgra",
    "rgb2bgra",
    "bgr2rgba",
    "gray2rgb",
    "gray2bgr",
    "gray2rgba",
    "gray2bgra",
    "rgb2gray",
    "bgr2gray",
    "rgba2gray",
    "bgra2gray",
    "rgb2hsv",
    "bgr2hsv",
]


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("code", CODES)
def test_cvt_color_matches_opencv(cv2, code: str, dtype: type) -> None:
    src = code.split("2")[0]
    img = image(31, 47, {"gray": None, "rgba": 4, "bgra": 4}.get(src, 3), dtype)
    if "hsv" in code:  # greys (no hue) and pure channels exercise the branches
        img[:4] = img[:4, :, :1]
        img[4:8, :, 1] = img[4:8, :, 0]
    got = arr(cv.cvt_color(img, code.upper() if code.startswith("b") else code))
    ref = cv2.cvtColor(img, getattr(cv2, "COLOR_" + code.upper()))
    assert got.shape == ref.shape and got.dtype == dtype
    if dtype == np.uint8:
        np.testing.assert_array_equal(got, ref)
    else:  # float: order of operations (cv2 uses FMA); HSV hue is in degrees, up to 360
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4 if "hsv" in code else 1e-6)


def test_gray_of_pure_colours_by_hand() -> None:
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]], np.uint8)
    # 0.299 * 255 = 76.2, 0.587 * 255 = 149.7, 0.114 * 255 = 29.1; white stays 255.
    assert arr(cv.cvt_color(rgb, "rgb2gray")).tolist() == [[76, 150, 29, 255]]
    assert arr(cv.cvt_color(rgb, "bgr2gray")).tolist() == [[29, 150, 76, 255]]
    assert arr(cv.cvt_color(rgb.astype(np.float32) / 255, "rgb2gray"))[0, 0] == pytest.approx(0.299)
    assert arr(cv.cvt_color(rgb[..., :1].copy(), "gray2rgba"))[0, 0].tolist() == [
        255,
        255,
        255,
        255,
    ]


# ---- normalize / to_tensor ----------------------------------------------------------

MEAN, STD = [0.485, 0.456, 0.406, 0.5], [0.229, 0.224, 0.225, 0.25]


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("channels", CHANNELS)
def test_normalize_and_to_tensor_match_numpy(dtype: type, channels: int | None) -> None:
    img = image(19, 23, channels, dtype)
    c = 1 if channels is None else channels
    scale = 255.0 if dtype == np.uint8 else 1.0  # the default
    mean, std = np.array(MEAN[:c]), np.array(STD[:c])
    hwc = (img.reshape(19, 23, c) / scale - mean) / std
    got = arr(cv.normalize(img, MEAN[:c], STD[:c]))
    assert got.dtype == np.float32 and got.shape == img.shape
    np.testing.assert_allclose(got, hwc.reshape(img.shape), rtol=1e-6, atol=1e-6)
    chw = arr(cv.to_tensor(img, MEAN[:c], STD[:c]))
    assert chw.shape == (c, 19, 23)
    np.testing.assert_allclose(chw, hwc.transpose(2, 0, 1), rtol=1e-6, atol=1e-6)
    plain = arr(cv.to_tensor(img, scale=2.0, batch=True))
    np.testing.assert_allclose(
        plain, img.reshape(19, 23, c).transpose(2, 0, 1)[None] / 2.0, rtol=1e-6
    )
    if c >= 3:  # BGR pixels in, RGB planes out; mean and std in the output's order
        swapped = arr(cv.to_tensor(img, MEAN[:c], STD[:c], swap_rb=True, batch=True))
        order = [2, 1, 0, *range(3, c)]
        ref = (img[..., order] / scale - mean) / std
        np.testing.assert_allclose(swapped, ref.transpose(2, 0, 1)[None], rtol=1e-6, atol=1e-6)


def test_to_tensor_by_hand() -> None:
    img = np.array([[[0, 51, 255], [102, 153, 204]]], np.uint8)  # 1x2 RGB
    t = arr(cv.to_tensor(img, mean=0.5, std=0.5))  # (x / 255 - 0.5) / 0.5 = x / 127.5 - 1
    assert t.shape == (3, 1, 2)
    np.testing.assert_allclose(t[:, 0, :], [[-1, -0.2], [-0.6, 0.2], [1, 0.6]], atol=1e-6)


# ---- geometry -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("channels", CHANNELS)
def test_flip_crop_pad_match_numpy(dtype: type, channels: int | None) -> None:
    img = image(6, 9, channels, dtype)
    np.testing.assert_array_equal(arr(cv.flip(img)), img[:, ::-1])
    np.testing.assert_array_equal(arr(cv.flip(img, "vertical")), img[::-1])
    np.testing.assert_array_equal(arr(cv.flip(img, "both")), img[::-1, ::-1])
    np.testing.assert_array_equal(arr(cv.crop(img, 2, 1, 5, 4)), img[1:5, 2:7])
    np.testing.assert_array_equal(arr(cv.crop(img, 0, 0, 9, 6)), img)
    widths = ((1, 2), (3, 0)) + (((0, 0),) if channels else ())
    np.testing.assert_array_equal(
        arr(cv.pad(img, 1, 2, 3, 0, 7)), np.pad(img, widths, constant_values=7)
    )


def test_letterbox_centres_the_resized_image() -> None:
    img = image(30, 60, 3, np.uint8)
    boxed, scale, (left, top) = cv.letterbox(img, (64, 64))
    out = arr(boxed)
    assert out.shape == (64, 64, 3) and scale == pytest.approx(64 / 60) and (left, top) == (0, 16)
    np.testing.assert_array_equal(out[16:48], arr(cv.resize(img, (64, 32))))
    assert (out[:16] == 114).all() and (out[48:] == 114).all()


# ---- inputs, outputs, errors --------------------------------------------------------


def test_accepts_tensors_memoryviews_and_tensor_holders() -> None:
    img = image(4, 6, 3, np.uint8)
    ref = arr(cv.resize(img, (3, 2)))
    holder = types.SimpleNamespace(tensor=ops.tensor(img))  # how walle_engine.np arrays look
    views = [ops.tensor(img), memoryview(img.tobytes()).cast("B", (4, 6, 3)), holder]
    for x in views:
        np.testing.assert_array_equal(arr(cv.resize(x, (3, 2))), ref)


def test_every_result_goes_through_one_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    class Wrapped:
        def __init__(self, t: _core.Tensor) -> None:
            self.tensor = t

    monkeypatch.setitem(sys.modules, "walle_engine.np", types.SimpleNamespace(asarray=Wrapped))
    img = image(4, 6, 3, np.uint8)
    results = [
        cv.resize(img, (3, 2)),
        cv.crop(img, 0, 0, 2, 2),
        cv.flip(img),
        cv.pad(img, 1, 1, 1, 1),
        cv.letterbox(img, (8, 8))[0],
        cv.cvt_color(img, "rgb2gray"),
        cv.normalize(img),
        cv.to_tensor(img),
    ]
    assert all(isinstance(r, Wrapped) and isinstance(r.tensor, _core.Tensor) for r in results)
    assert isinstance(cv.resize(Wrapped(ops.tensor(img)), (3, 2)), Wrapped)  # and back in


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda img: cv.resize(img, (0, 4)), "positive"),
        (lambda img: cv.resize(img, (4,)), "width, height"),
        (lambda img: cv.resize(img, (4, 4), "cubic"), "interpolation"),
        (lambda img: cv.resize(img.astype(np.int32), (4, 4)), "uint8 or float32"),
        (lambda img: cv.resize(img[None], (4, 4)), r"\(H, W\) or \(H, W, C\)"),
        (lambda img: cv.resize(img[:0], (4, 4)), "empty"),
        (lambda img: cv.crop(img, 3, 2, 6, 4), "outside the 8x5 image"),
        (lambda img: cv.crop(img, -1, 0, 2, 2), "outside"),
        (lambda img: cv.crop(img, 0, 0, 0, 2), "positive"),
        (lambda img: cv.flip(img, "diagonal"), "direction"),
        (lambda img: cv.pad(img, -1, 0, 0, 0), ">= 0"),
        (lambda img: cv.pad(img, 1, 0, 0, 0, 256), "uint8"),
        (lambda img: cv.cvt_color(img, "rgb2lab"), "unknown conversion"),
        (lambda img: cv.cvt_color(img, "rgba2rgb"), r"\(H, W, 4\)"),
        (lambda img: cv.cvt_color(img, "gray2rgb"), r"\(H, W\) or \(H, W, 1\)"),
        (lambda img: cv.normalize(img, [0.5, 0.5]), "2 values for 3 channels"),
        (lambda img: cv.normalize(img, std=0), "non-zero"),
        (lambda img: cv.to_tensor(img[..., 0].copy(), swap_rb=True), "3 channels"),
        (lambda img: cv.resize(img[:, ::2], (4, 4)), "C-contiguous"),
    ],
)
def test_bad_inputs_raise_clear_value_errors(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(image(5, 8, 3, np.uint8))


def test_non_images_raise_type_error() -> None:
    with pytest.raises(TypeError, match="buffer protocol"):
        cv.resize([[1, 2], [3, 4]], (2, 2))


def test_it_runs_in_an_isolated_subinterpreter_without_numpy() -> None:
    # Fresh process: a sub-interpreter that fails to import can abort the host.
    guest = textwrap.dedent(
        """
        import sys
        from walle_engine import cv
        raw = memoryview(bytes([0, 40, 80, 120])).cast("B", (2, 2))
        out = cv.resize(raw, (4, 4))
        out = getattr(out, "tensor", out)
        assert memoryview(out).tolist()[1] == [20, 30, 50, 60], memoryview(out).tolist()
        rgb = memoryview(bytes([255, 0, 0, 0, 0, 255])).cast("B", (1, 2, 3))
        t = cv.to_tensor(cv.cvt_color(rgb, "rgb2bgr"), batch=True)
        t = getattr(t, "tensor", t)
        assert t.shape == (1, 3, 1, 2) and memoryview(t).tolist()[0][0] == [[0.0, 1.0]]
        assert "numpy" not in sys.modules and "cv2" not in sys.modules
        """
    )
    host = textwrap.dedent(
        f"""
        import _interpreters
        iid = _interpreters.create("isolated")
        try:
            err = _interpreters.exec(iid, {guest!r})
            assert err is None, err.formatted
        finally:
            _interpreters.destroy(iid)
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", host], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
