"""A numpy-like array module on the engine, for task scripts that cannot import numpy.

Task scripts run in isolated sub-interpreters where numpy refuses to load; ``from
walle_engine import np`` gives them an ``ndarray`` over an engine tensor and the familiar
functions: creation, elementwise math with numpy broadcasting and promotion, reductions,
indexing (basic, integer arrays, boolean masks), shape manipulation, sorting and matmul.
Arrays export the buffer protocol, so on the host ``numpy.asarray(x)`` is a zero-copy view.
This module never imports numpy.

Results match numpy's, except:

- There is no float64. Python floats, float64 (and float16) data and ``dtype=float`` become
  float32, and whatever numpy computes in float64 (true division and ``mean`` of integers,
  math functions of integers) is float32 here. Python ints become int64, as in numpy.
- The dtypes are float32, int32, int64, bool and uint8 (images; its arithmetic is computed
  in int32 and wrapped back, as numpy's uint8 arithmetic wraps). Other integer buffers
  widen to int32 or int64; bool ``**``, ``//`` and ``%`` give int32 (numpy: int8).
- Basic indexing returns a view when the selected elements are contiguous in memory
  (``x[i]``, ``x[a:b]``, ``x[i, j:k]``) and a copy otherwise (``x[:, j]``, ``x[::2]``);
  ``transpose``/``.T`` and ``broadcast_to`` copy. ``reshape``, ``ravel``, ``squeeze`` and
  ``expand_dims`` are views, and in-place operators and assignment write through them.
- Reductions to one value and integer indexing of a 1-d array return 0-d arrays rather
  than numpy scalars; ``float()``, ``int()``, ``bool()`` and ``.item()`` convert them.
- ``sort``/``argsort`` are stable (numpy's default is not); ``topk`` is an extra.
- Integer arithmetic wraps silently on overflow; ``int64`` reductions and integer
  ``matmul`` accumulate in double precision, exact to 2**53.
"""

from __future__ import annotations

import array as _array
import builtins
import math
import operator
import struct
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from typing import Any

from walle_engine import _core
from walle_engine._core import Tensor

ArrayLike = Any  # ndarray, Tensor, a buffer, a nested sequence or a scalar
DTypeLike = Any  # a dtype, its name, a numpy dtype or scalar type, or float/int/bool
Axis = int | Sequence[int] | None

__all__ = [
    "AxisError",
    "abs",
    "absolute",
    "add",
    "all",
    "allclose",
    "any",
    "arange",
    "argmax",
    "argmin",
    "argsort",
    "array",
    "array_equal",
    "asarray",
    "bool_",
    "broadcast_to",
    "ceil",
    "clip",
    "concatenate",
    "cos",
    "divide",
    "dot",
    "dtype",
    "e",
    "empty",
    "empty_like",
    "equal",
    "exp",
    "expand_dims",
    "eye",
    "float32",
    "floor",
    "floor_divide",
    "full",
    "full_like",
    "greater",
    "greater_equal",
    "inf",
    "int32",
    "int64",
    "isclose",
    "isfinite",
    "isinf",
    "isnan",
    "less",
    "less_equal",
    "linspace",
    "log",
    "logical_and",
    "logical_not",
    "logical_or",
    "logical_xor",
    "matmul",
    "max",
    "maximum",
    "mean",
    "min",
    "minimum",
    "mod",
    "multiply",
    "nan",
    "ndarray",
    "negative",
    "newaxis",
    "nonzero",
    "not_equal",
    "ones",
    "ones_like",
    "pi",
    "power",
    "prod",
    "ravel",
    "remainder",
    "reshape",
    "round",
    "sigmoid",
    "sign",
    "sin",
    "sort",
    "sqrt",
    "square",
    "squeeze",
    "stack",
    "std",
    "subtract",
    "sum",
    "take",
    "tanh",
    "topk",
    "transpose",
    "true_divide",
    "var",
    "where",
    "zeros",
    "zeros_like",
]

newaxis = None
nan = math.nan
inf = math.inf
pi = math.pi
e = math.e


class AxisError(ValueError, IndexError):
    """An axis argument out of range (numpy.exceptions.AxisError)."""


# ---- dtypes

# Promotion order. uint8 appears once the engine stores it; kernels have no uint8
# arithmetic, so ops on it compute in int32 (_COMPUTE) and convert back.
_RANK = {"bool": 0, "uint8": 1, "int32": 2, "int64": 3, "float32": 4}
_KIND = {"bool": 0, "uint8": 1, "int32": 2, "int64": 2, "float32": 3}  # for same_kind casts
_COMPUTE = {"uint8": "int32"}
_ITEMSIZE = {"bool": 1, "uint8": 1, "int32": 4, "int64": 8, "float32": 4}
_TYPECODE = {"bool": "B", "uint8": "B", "int32": "i", "int64": "q", "float32": "f"}
_INT_RANGE = {"uint8": (0, 255), "int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_ALIASES = {
    "float": "float32",
    "float64": "float32",
    "double": "float32",
    "single": "float32",
    "f": "float32",
    "f4": "float32",
    "f8": "float32",
    "d": "float32",
    "int": "int64",
    "int_": "int64",
    "intp": "int64",
    "long": "int64",
    "i8": "int64",
    "q": "int64",
    "intc": "int32",
    "i4": "int32",
    "i": "int32",
    "bool_": "bool",
    "?": "bool",
    "b1": "bool",
    "ubyte": "uint8",
    "u1": "uint8",
    "B": "uint8",
}


def _engine_has(name: str) -> bool:
    try:
        Tensor.empty(name, [0])
    except ValueError:
        return False
    return True


_SUPPORTED = tuple(n for n in _RANK if _engine_has(n))


def _dtype_name(spec: DTypeLike) -> str:
    if isinstance(spec, str):
        name = spec
    elif isinstance(spec, type):
        name = spec.__name__  # float, int, bool, numpy scalar types
    else:
        name = getattr(spec, "name", None)  # numpy dtype objects
    name = _ALIASES.get(name, name)
    if name not in _SUPPORTED:
        raise TypeError(f"data type {spec!r} is not supported: use one of {', '.join(_SUPPORTED)}")
    return name


class dtype(str):
    """An engine dtype. It equals its name (``x.dtype == "float32"``), and calling it
    converts like numpy's scalar types: ``np.float32(1.5)`` is a 0-d float32 array."""

    __slots__ = ()

    def __new__(cls, spec: DTypeLike) -> dtype:
        return _DTYPES[_dtype_name(spec)]

    @property
    def name(self) -> str:
        return str.__str__(self)

    @property
    def itemsize(self) -> int:
        return _ITEMSIZE[self]

    @property
    def kind(self) -> str:
        return {"bool": "b", "uint8": "u", "float32": "f"}.get(self, "i")

    def __repr__(self) -> str:
        return f"dtype('{self.name}')"

    def __call__(self, value: ArrayLike = 0) -> ndarray:
        return array(value, dtype=self)


_DTYPES = {n: str.__new__(dtype, n) for n in _SUPPORTED}
float32 = _DTYPES["float32"]
int32 = _DTYPES["int32"]
int64 = _DTYPES["int64"]
bool_ = _DTYPES["bool"]
if "uint8" in _DTYPES:
    uint8 = _DTYPES["uint8"]
    __all__ += ["uint8"]


def _promote(*dts: str) -> str:
    return builtins.max(dts, key=_RANK.__getitem__)


def _scalar_dtype(v: bool | int | float) -> str:
    return "bool" if isinstance(v, bool) else "int64" if isinstance(v, int) else "float32"


def _weak(v: bool | int | float, dt: str) -> str:
    """numpy 2's rule for a Python scalar meeting an array of ``dt``: the array's kind wins."""
    if isinstance(v, bool):
        return dt
    if isinstance(v, int):
        return "int64" if dt == "bool" else dt
    return "float32"


# ---- small helpers

_PY_SCALAR = (bool, int, float)
_b = _core.binary
_u = _core.unary
_s = _core.select


def _strides(shape: Sequence[int]) -> list[int]:
    out, s = [], 1
    for n in reversed(shape):
        out.append(s)
        s *= n
    return out[::-1]


def _shape_str(shape: Sequence[int]) -> str:
    return "(" + ",".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def _cast(t: Tensor, dt: str) -> Tensor:
    return t if t.dtype == dt else _core.cast(t, dt)


def _wrap(t: Tensor) -> ndarray:
    a = ndarray.__new__(ndarray)
    a._t = t
    return a


def _host(values: list[Any], dt: str, shape: Sequence[int]) -> Tensor:
    """An engine tensor of ``dt`` from a flat list of Python scalars."""
    mv = memoryview(_array.array(_TYPECODE[dt], values))
    if dt == "bool":
        mv = mv.cast("?")
    return _core.view(_core.cast(Tensor(mv), dt), 0, list(shape))


def _scalar(v: bool | int | float, dt: str) -> Tensor:
    """A 0-d tensor of ``dt`` holding ``v`` (floats truncate into integer dtypes)."""
    if dt == "float32":
        v = float(v)
    elif dt == "bool":
        v = bool(v)
    else:
        v = int(v)
        lo, hi = _INT_RANGE[dt]
        if not lo <= v <= hi:
            raise OverflowError(f"Python integer {v} out of bounds for {dt}")
    return _host([v], dt, ())


def _item(t: Tensor) -> Any:
    return memoryview(t).tolist()


def _arg(x: ArrayLike) -> ndarray | bool | int | float:
    """An operand: Python scalars stay as they are (they promote weakly)."""
    return x if isinstance(x, ndarray | bool | int | float) else asarray(x)


def _tensor(x: ndarray | bool | int | float, dt: str) -> Tensor:
    return _scalar(x, dt) if isinstance(x, _PY_SCALAR) else _cast(x._t, dt)


def _shape(x: ndarray | bool | int | float) -> tuple[int, ...]:
    return () if isinstance(x, _PY_SCALAR) else x.shape


def _not(t: Tensor) -> Tensor:
    return _b("eq", t, _scalar(False, "bool"))


def _has_nan(t: Tensor) -> bool:
    """Whether a float32 tensor may hold NaN (a sum is NaN then; also for inf - inf)."""
    return t.dtype == "float32" and math.isnan(
        _item(_core.reduce("sum", t, list(range(len(t.shape))), False))
    )


def _broadcast_shapes(*shapes: Sequence[int]) -> tuple[int, ...]:
    ndim = builtins.max((len(s) for s in shapes), default=0)
    out = []
    for i in range(-ndim, 0):
        dims = {s[i] for s in shapes if len(s) >= -i} - {1}
        if len(dims) > 1:
            raise ValueError(
                "operands could not be broadcast together with shapes "
                + " ".join(_shape_str(s) for s in shapes)
            )
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def _broadcast(t: Tensor, shape: Sequence[int]) -> Tensor:
    """``t`` broadcast to ``shape`` (leading unit dims of ``t`` may be dropped), as a tensor."""
    shape, src = tuple(shape), tuple(t.shape)
    if src == shape:
        return t
    while len(src) > len(shape) and src[0] == 1:
        src = src[1:]
    lead = len(shape) - len(src)
    if lead < 0 or builtins.any(m not in (1, n) for m, n in zip(src, shape[lead:], strict=True)):
        raise ValueError(
            f"could not broadcast input array from shape {_shape_str(t.shape)} "
            f"into shape {_shape_str(shape)}"
        )
    st = [0] * lead + [
        s if m == n else 0 for m, n, s in zip(src, shape[lead:], _strides(src), strict=True)
    ]
    out = Tensor.empty(t.dtype, list(shape))
    _core.strided_copy(out, 0, _strides(shape), t, 0, st, list(shape))
    return out


def _axes(axis: Axis, ndim: int) -> list[int]:
    if axis is None:
        return list(range(ndim))
    out = []
    for ax in [axis] if not isinstance(axis, Sequence) else axis:
        ax = operator.index(ax)
        if not -ndim <= ax < ndim:
            raise AxisError(f"axis {ax} is out of bounds for array of dimension {ndim}")
        out.append(ax % ndim)
    if len(set(out)) != len(out):
        raise ValueError("duplicate value in 'axis'")
    return out


def _reduce_axes(axis: Axis, ndim: int) -> list[int]:
    """``_axes`` for ufunc reductions, where a 0-d array also takes axis 0 or -1 (numpy's
    mean, var and std do not)."""
    if ndim == 0 and axis is not None:
        _axes(axis, 1)
        return []
    return _axes(axis, ndim)


# The engine's limits (tensor.h): checked here too so an oversized request fails with a
# clear ValueError before any integer reaches the C++ layer.
_MAX_DIMS = 16
_MAX_ELEMENTS = 2**40


def _shape_arg(shape: int | Sequence[int]) -> list[int]:
    try:
        dims = [operator.index(shape)]
    except TypeError:
        dims = [operator.index(d) for d in shape]
    if builtins.any(d < 0 for d in dims):
        raise ValueError("negative dimensions are not allowed")
    if len(dims) > _MAX_DIMS:
        raise ValueError(f"{len(dims)} dimensions: walle_engine supports at most {_MAX_DIMS}")
    if math.prod(d for d in dims if d) > _MAX_ELEMENTS:
        raise ValueError(f"shape {tuple(dims)} has more than 2**40 elements (the engine's limit)")
    return dims


# ---- the array


def _operators(name: str) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
    """``__op__``, ``__rop__`` and ``__iop__`` methods for the module function ``name``."""

    def forward(self: ndarray, other: ArrayLike) -> ndarray:
        try:
            other = _arg(other)
        except TypeError:
            return NotImplemented
        return globals()[name](self, other)

    def reflected(self: ndarray, other: ArrayLike) -> ndarray:
        try:
            other = _arg(other)
        except TypeError:
            return NotImplemented
        return globals()[name](other, self)

    def inplace(self: ndarray, other: ArrayLike) -> ndarray:
        return self._assign(globals()[name](self, _arg(other)))

    return forward, reflected, inplace


class ndarray:
    """An n-dimensional array: a C-contiguous engine tensor with numpy's interface.

    ``ndarray(tensor)`` wraps a ``walle_engine.Tensor``; ``array``/``asarray`` convert data.
    """

    __slots__ = ("_t",)
    __hash__ = None  # type: ignore[assignment]
    _t: Tensor

    def __init__(self, tensor: Tensor) -> None:
        if not isinstance(tensor, Tensor):
            raise TypeError("ndarray wraps a Tensor: use np.array() or np.asarray() for data")
        self._t = tensor

    # -- attributes
    @property
    def tensor(self) -> Tensor:
        """The engine tensor holding the data (shared, not copied)."""
        return self._t

    @property
    def shape(self) -> tuple[int, ...]:
        return self._t.shape

    @property
    def dtype(self) -> dtype:
        return _DTYPES[self._t.dtype]

    @property
    def ndim(self) -> int:
        return len(self._t.shape)

    @property
    def size(self) -> int:
        return math.prod(self._t.shape)

    @property
    def itemsize(self) -> int:
        return _ITEMSIZE[self._t.dtype]

    @property
    def nbytes(self) -> int:
        return self.size * self.itemsize

    @property
    def T(self) -> ndarray:
        return self.transpose()

    def __buffer__(self, flags: int, /) -> memoryview:
        return self._t.__buffer__(flags)

    # -- conversion
    def astype(self, dtype: DTypeLike, copy: bool = True) -> ndarray:
        dt = _dtype_name(dtype)
        if dt == self.dtype and not copy:
            return self
        return _wrap(_core.cast(self._t, dt))

    def copy(self) -> ndarray:
        return _wrap(_core.cast(self._t, self._t.dtype))

    __copy__ = copy

    def __deepcopy__(self, memo: dict[int, Any]) -> ndarray:
        return self.copy()

    def tolist(self) -> Any:
        return memoryview(self._t).tolist()

    def item(self, *index: int) -> Any:
        if not index:
            if self.size != 1:
                raise ValueError("can only convert an array of size 1 to a Python scalar")
            return _item(_core.view(self._t, 0, []))
        if len(index) == 1:
            i = operator.index(index[0])
            if not -self.size <= i < self.size:
                raise IndexError(f"index {i} is out of bounds for size {self.size}")
            return _item(_core.view(self._t, i % self.size, []))
        return self[tuple(index)].item()

    def fill(self, value: ArrayLike) -> None:
        self[...] = value

    def __bool__(self) -> bool:
        if self.size != 1:
            raise ValueError(
                "The truth value of an empty array is ambiguous."
                if self.size == 0
                else "The truth value of an array with more than one element is ambiguous. "
                "Use a.any() or a.all()"
            )
        return bool(self.item())

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        if self.ndim or self.dtype not in ("int32", "int64", "uint8"):
            raise TypeError("only integer scalar arrays can be converted to a scalar index")
        return self.item()

    def __len__(self) -> int:
        if not self.ndim:
            raise TypeError("len() of unsized object")
        return self.shape[0]

    def __iter__(self) -> Iterator[ndarray]:
        if not self.ndim:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self.shape[0]))

    def __contains__(self, value: ArrayLike) -> bool:
        return bool(any(self == value))

    def __repr__(self) -> str:
        return _repr(self)

    def __str__(self) -> str:
        return _str(self)

    def __format__(self, spec: str) -> str:
        if self.ndim == 0:
            return format(self.item(), spec)
        if spec:
            raise TypeError("unsupported format string passed to ndarray.__format__")
        return str(self)

    # -- shape
    def reshape(self, *shape: int | Sequence[int]) -> ndarray:
        return reshape(self, shape[0] if len(shape) == 1 else shape)

    def ravel(self) -> ndarray:
        return reshape(self, -1)

    def flatten(self) -> ndarray:
        return reshape(self, -1).copy()

    def transpose(self, *axes: int | Sequence[int]) -> ndarray:
        return transpose(self, (axes[0] if len(axes) == 1 else axes) if axes else None)

    def squeeze(self, axis: Axis = None) -> ndarray:
        return squeeze(self, axis)

    # -- reductions and friends
    def sum(self, axis: Axis = None, dtype: DTypeLike = None, *, keepdims: bool = False) -> ndarray:
        return sum(self, axis, dtype, keepdims=keepdims)

    def mean(
        self, axis: Axis = None, dtype: DTypeLike = None, *, keepdims: bool = False
    ) -> ndarray:
        return mean(self, axis, dtype, keepdims=keepdims)

    def prod(
        self, axis: Axis = None, dtype: DTypeLike = None, *, keepdims: bool = False
    ) -> ndarray:
        return prod(self, axis, dtype, keepdims=keepdims)

    def max(self, axis: Axis = None, *, keepdims: bool = False) -> ndarray:
        return max(self, axis, keepdims=keepdims)

    def min(self, axis: Axis = None, *, keepdims: bool = False) -> ndarray:
        return min(self, axis, keepdims=keepdims)

    def argmax(self, axis: int | None = None, *, keepdims: bool = False) -> ndarray:
        return argmax(self, axis, keepdims=keepdims)

    def argmin(self, axis: int | None = None, *, keepdims: bool = False) -> ndarray:
        return argmin(self, axis, keepdims=keepdims)

    def std(self, axis: Axis = None, *, ddof: int = 0, keepdims: bool = False) -> ndarray:
        return std(self, axis, ddof=ddof, keepdims=keepdims)

    def var(self, axis: Axis = None, *, ddof: int = 0, keepdims: bool = False) -> ndarray:
        return var(self, axis, ddof=ddof, keepdims=keepdims)

    def any(self, axis: Axis = None, *, keepdims: bool = False) -> ndarray:
        return any(self, axis, keepdims=keepdims)

    def all(self, axis: Axis = None, *, keepdims: bool = False) -> ndarray:
        return all(self, axis, keepdims=keepdims)

    def clip(self, min: ArrayLike = None, max: ArrayLike = None) -> ndarray:
        return clip(self, min, max)

    def round(self, decimals: int = 0) -> ndarray:
        return round(self, decimals)

    def argsort(self, axis: int | None = -1) -> ndarray:
        return argsort(self, axis)

    def sort(self, axis: int = -1) -> None:
        """Sort in place."""
        self[...] = sort(self, axis)

    def dot(self, other: ArrayLike) -> ndarray:
        return dot(self, other)

    # -- operators
    __add__, __radd__, __iadd__ = _operators("add")
    __sub__, __rsub__, __isub__ = _operators("subtract")
    __mul__, __rmul__, __imul__ = _operators("multiply")
    __truediv__, __rtruediv__, __itruediv__ = _operators("divide")
    __floordiv__, __rfloordiv__, __ifloordiv__ = _operators("floor_divide")
    __mod__, __rmod__, __imod__ = _operators("mod")
    __pow__, __rpow__, __ipow__ = _operators("power")
    __matmul__, __rmatmul__, __imatmul__ = _operators("matmul")
    __and__, __rand__, __iand__ = _operators("_bitwise_and")
    __or__, __ror__, __ior__ = _operators("_bitwise_or")
    __xor__, __rxor__, __ixor__ = _operators("_bitwise_xor")
    __eq__ = _operators("equal")[0]  # type: ignore[assignment]
    __ne__ = _operators("not_equal")[0]  # type: ignore[assignment]
    __lt__ = _operators("less")[0]
    __le__ = _operators("less_equal")[0]
    __gt__ = _operators("greater")[0]
    __ge__ = _operators("greater_equal")[0]

    def __neg__(self) -> ndarray:
        return negative(self)

    def __pos__(self) -> ndarray:
        return self.copy()

    def __abs__(self) -> ndarray:
        return abs(self)

    def __round__(self, ndigits: int | None = None) -> ndarray:
        return round(self, ndigits or 0)

    def __invert__(self) -> ndarray:
        if self.dtype == "bool":
            return logical_not(self)
        if self.dtype == "float32":
            raise TypeError("ufunc 'invert' not supported for float32")
        return subtract(negative(self), 1)  # ~x == -x - 1 in two's complement

    def _assign(self, result: ndarray) -> ndarray:
        """Write an in-place operator's result into this array's storage."""
        if result.shape != self.shape:
            raise ValueError(
                f"non-broadcastable output operand with shape {_shape_str(self.shape)} "
                f"doesn't match the broadcast shape {_shape_str(result.shape)}"
            )
        if _KIND[result.dtype] > _KIND[self.dtype]:
            raise TypeError(
                f"Cannot cast ufunc output from dtype('{result.dtype}') to "
                f"dtype('{self.dtype}') with casting rule 'same_kind'"
            )
        st = _strides(self.shape)
        _core.strided_copy(self._t, 0, st, _cast(result._t, self.dtype), 0, st, list(self.shape))
        return self

    # -- indexing
    def __getitem__(self, key: Any) -> ndarray:
        offset, shape, strides, advanced = self._index(key)
        t = _strided(self._t, offset, shape, strides)
        return _wrap(_take_advanced(t, advanced) if advanced else t)

    def __setitem__(self, key: Any, value: ArrayLike) -> None:
        offset, shape, strides, advanced = self._index(key)
        dt = self._t.dtype
        v = _scalar(value, dt) if isinstance(value, _PY_SCALAR) else _convert(value, dt)[0]
        if not advanced:
            src = _broadcast(v, shape)
            _core.strided_copy(self._t, offset, strides, src, 0, _strides(shape), shape)
            return
        positions = _take_advanced(_offsets(offset, shape, strides), advanced)
        _core.put(self._t, positions, v if v.shape == () else _broadcast(v, positions.shape))

    def _index(self, key: Any) -> tuple[int, list[int], list[int], list[tuple[int, ndarray]]]:
        """Split an index into its basic part, a strided view (offset, shape, strides in
        elements) of this array's storage, and its advanced part: (dim of that view, int64
        or bool index array) pairs, which numpy applies after the basic part."""
        items = []  # (kind, value), kind in new, int, slice, array, mask, ...
        for it in key if isinstance(key, tuple) else (key,):
            if it is None:
                items.append(("new", 1))
            elif it is Ellipsis:
                items.append(("...", None))
            elif isinstance(it, slice):
                items.append(("slice", it))
            elif isinstance(it, bool):
                items.append(("new", int(it)))  # x[True] adds an axis, x[False] an empty one
            elif isinstance(it, int) or (
                not isinstance(it, ndarray | list | tuple) and _is_index(it)
            ):
                items.append(("int", operator.index(it)))
            elif isinstance(it, float | str):
                raise IndexError(
                    "only integers, slices (`:`), ellipsis (`...`), numpy.newaxis (`None`) "
                    "and integer or boolean arrays are valid indices"
                )
            else:
                a = asarray(it)
                if a.dtype == "bool":
                    items.append(("mask", a) if a.ndim else ("new", int(a.item())))
                elif a.dtype != "float32" or a.size == 0:
                    items.append(("int", a.item()) if a.ndim == 0 else ("array", a.astype(int64)))
                else:
                    raise IndexError("arrays used as indices must be of integer (or boolean) type")
        used = builtins.sum(
            (v.ndim if k == "mask" else 1)
            for k, v in items
            if k in ("int", "slice", "array", "mask")
        )
        if used > self.ndim:
            raise IndexError(
                f"too many indices for array: array is {self.ndim}-dimensional, "
                f"but {used} were indexed"
            )
        ellipses = [i for i, (k, _) in enumerate(items) if k == "..."]
        if len(ellipses) > 1:
            raise IndexError("an index can only have a single ellipsis ('...')")
        fill = [("slice", slice(None))] * (self.ndim - used)
        if ellipses:
            items[ellipses[0] : ellipses[0] + 1] = fill
        else:
            items += fill
        if builtins.any(k in ("array", "mask") for k, _ in items):
            # Next to index arrays, integers are 0-d index arrays (numpy's rule; it decides
            # where the indexed dims go).
            items = [("array", asarray(v)) if k == "int" else (k, v) for k, v in items]

        offset, out_shape, out_strides, advanced, d = 0, [], [], [], 0
        shape, strides = self.shape, _strides(self.shape)
        for kind, v in items:
            if kind == "new":
                out_shape.append(v)
                out_strides.append(0)
                continue
            n = shape[d]
            if kind == "int":
                if not -n <= v < n:
                    raise IndexError(f"index {v} is out of bounds for axis {d} with size {n}")
                offset += (v % n) * strides[d]
            elif kind == "slice":
                start, stop, step = v.indices(n)
                count = len(range(start, stop, step))
                offset += start * strides[d] if count else 0
                out_shape.append(count)
                out_strides.append(step * strides[d])
            else:
                m = v.ndim if kind == "mask" else 1
                if kind == "mask" and v.shape != shape[d : d + m]:
                    bad = next(i for i in range(m) if v.shape[i] != shape[d + i])
                    raise IndexError(
                        f"boolean index did not match indexed array along axis {d + bad}; "
                        f"size of axis is {shape[d + bad]} but size of corresponding boolean "
                        f"axis is {v.shape[bad]}"
                    )
                advanced.append((len(out_shape), v))
                out_shape += shape[d : d + m]
                out_strides += strides[d : d + m]
                d += m - 1
            d += 1
        return offset, out_shape, out_strides, advanced


# ---- indexing internals


def _is_index(x: object) -> bool:
    """Whether x is an integer scalar (a numpy int; not an index array)."""
    try:
        operator.index(x)
    except TypeError:
        return False
    return True


def _strided(t: Tensor, offset: int, shape: list[int], strides: list[int]) -> Tensor:
    """The strided view of ``t``'s storage as a tensor: shared when contiguous, else copied."""
    expect, contiguous = 1, True
    for n, s in zip(reversed(shape), reversed(strides), strict=True):
        contiguous &= n == 1 or s == expect
        expect *= n
    if contiguous or expect == 0:
        return _core.view(t, offset if expect else 0, shape)
    out = Tensor.empty(t.dtype, shape)
    _core.strided_copy(out, 0, _strides(shape), t, offset, strides, shape)
    return out


def _offsets(offset: int, shape: list[int], strides: list[int]) -> Tensor:
    """The storage offset of every element of a strided view (int64, of ``shape``)."""
    if strides == _strides(shape):  # contiguous
        return _core.view(_core.arange(offset, 1, math.prod(shape), "int64"), 0, shape)
    o = _scalar(offset, "int64")
    for d, (n, s) in enumerate(zip(shape, strides, strict=True)):
        step = _core.view(
            _core.arange(0, s, n, "int64"), 0, [1] * d + [n] + [1] * (len(shape) - d - 1)
        )
        o = _b("add", o, step)
    return o


def _checked(index: Tensor, n: int, axis: int) -> Tensor:
    """An int64 index tensor with negative entries resolved, after a bounds check."""
    if not math.prod(index.shape):
        return index
    lo, hi = (
        _item(_core.reduce(op, index, list(range(len(index.shape))), False))
        for op in ("min", "max")
    )
    if hi >= n or lo < -n:
        raise IndexError(
            f"index {hi if hi >= n else lo} is out of bounds for axis {axis} with size {n}"
        )
    return (
        index
        if lo >= 0
        else _s(_b("lt", index, _scalar(0, "int64")), _b("add", index, _scalar(n, "int64")), index)
    )


def _take_advanced(t: Tensor, advanced: list[tuple[int, ndarray]]) -> Tensor:
    """Apply index arrays to a contiguous tensor the way numpy does: all of them broadcast
    together, and their dims replace the indexed ones, or go first when those are not
    adjacent. Masks select like the index arrays of their nonzero elements."""
    shape = list(t.shape)
    index: list[tuple[int, Tensor]] = []
    shapes = []  # of numpy's index arrays: a mask stands for one per dim
    merged = 0
    for dim, a in advanced:
        dim -= merged
        if a.dtype == "bool":  # one flat index into the mask's dims, merged into one dim
            m = a.ndim
            shape[dim : dim + m] = [math.prod(shape[dim : dim + m])]
            t = _core.view(t, 0, shape)
            merged += m - 1
            index.append((dim, _core.flatnonzero(a._t)))
            shapes += [index[-1][1].shape] * m
        else:
            index.append((dim, a._t))
            shapes.append(a.shape)
    if len(index) == 1:
        return _core.take(t, index[0][1], index[0][0])
    try:
        _broadcast_shapes(*shapes)
    except ValueError:
        raise IndexError(
            "shape mismatch: indexing arrays could not be broadcast together with shapes "
            + " ".join(map(_shape_str, shapes))
        ) from None
    dims = [d for d, _ in index]
    if dims != list(range(dims[0], dims[0] + len(dims))):
        perm = dims + [d for d in range(len(shape)) if d not in dims]
        t = _transpose(t, perm)
        shape = [shape[p] for p in perm]
        index = [(j, i) for j, (_, i) in enumerate(index)]
    # One flat index into the indexed dims, merged into one dim.
    flat, stride = None, 1
    for d, i in reversed(index):
        term = _checked(i, shape[d], d)
        term = term if stride == 1 else _b("mul", term, _scalar(stride, "int64"))
        flat = term if flat is None else _b("add", term, flat)
        stride *= shape[d]
    q = index[0][0]
    t = _core.view(t, 0, [*shape[:q], stride, *shape[q + len(index) :]])
    return _core.take(t, flat, q)


# ---- conversion


def _flatten(obj: Any) -> tuple[list[int], list[Any], str]:
    """The shape, flat elements and natural dtype of a scalar or nested sequences of them."""
    shape, o = [], obj
    while isinstance(o, list | tuple | ndarray):
        if isinstance(o, ndarray):
            shape += o.shape
            break
        shape.append(len(o))
        if not o:
            break
        o = o[0]
    level = [obj]
    for d, n in enumerate(shape):
        nxt: list[Any] = []
        for o in level:
            if isinstance(o, ndarray):
                o = o.tolist()
            if not isinstance(o, list | tuple) or len(o) != n:
                raise ValueError(
                    "setting an array element with a sequence. The requested array has an "
                    f"inhomogeneous shape after {d} dimensions. The detected shape was "
                    f"{tuple(shape[:d])} + inhomogeneous part."
                )
            nxt.extend(o)
        level = nxt
    has_int = has_float = False
    for i, v in enumerate(level):
        if isinstance(v, ndarray) and v.ndim == 0:
            v = level[i] = v.item()
        if isinstance(v, bool):
            continue
        if isinstance(v, int):
            has_int = True
        elif isinstance(v, float):
            has_float = True
        elif isinstance(v, list | tuple | ndarray):
            raise ValueError(
                "setting an array element with a sequence. The requested array has an "
                f"inhomogeneous shape after {len(shape)} dimensions. The detected shape was "
                f"{tuple(shape)} + inhomogeneous part."
            )
        elif hasattr(v, "__index__"):
            level[i], has_int = operator.index(v), True
        elif hasattr(v, "__float__"):
            level[i], has_float = float(v), True
        else:
            raise TypeError(f"cannot convert {type(v).__name__} to an array element")
    natural = "float32" if has_float or not level else "int64" if has_int else "bool"
    return shape, level, natural


def _from_python(obj: Any, dt: str | None) -> Tensor:
    shape, flat, natural = _flatten(obj)
    # Pack straight into the requested dtype when that is exact (integers into an integer
    # dtype raise OverflowError when out of range, like numpy); otherwise convert after.
    exact = dt == "float32" or (dt not in (None, "bool") and natural != "float32")
    t = _host(flat, dt if exact else natural, shape)
    return t if dt is None else _cast(t, dt)


def _buffer_dtype(mv: memoryview) -> tuple[str, bool]:
    """The dtype a buffer converts to, and whether it already stores exactly that."""
    fmt, size = mv.format, mv.itemsize
    code = fmt[-1] if len(fmt) >= 1 and fmt[:-1] in ("", "@", "=", "<") else ""
    if code and code in "fde":
        return "float32", code == "f"
    if code == "?":
        return "bool", True
    if code and code in "bhilq":
        return ("int32" if size <= 4 else "int64"), size in (4, 8)
    if code and code in "BHILQ":
        if size == 1 and "uint8" in _DTYPES:
            return "uint8", True
        return ("int32" if size <= 2 else "int64"), False
    raise TypeError(f"unsupported buffer format {fmt!r}")


def _convert(a: ArrayLike, dt: str | None) -> tuple[Tensor, bool]:
    """``a`` as a tensor (of ``dt`` if given), and whether that is a new copy."""
    if isinstance(a, ndarray):
        t, fresh = a._t, False
    elif isinstance(a, Tensor):
        t, fresh = a, False
    elif isinstance(a, bool | int | float | list | tuple):
        return _from_python(a, dt), True
    else:
        try:
            mv = memoryview(a)
        except TypeError:
            if hasattr(a, "__index__"):
                return _from_python(operator.index(a), dt), True
            if hasattr(a, "__float__"):
                return _from_python(float(a), dt), True
            raise TypeError(f"cannot convert {type(a).__name__} to an array") from None
        natural, exact = _buffer_dtype(mv)
        if mv.c_contiguous and exact and dt in (None, natural):
            t, fresh = Tensor(mv), False
        else:
            return _core.convert(mv, dt or natural), True
    if dt is not None and t.dtype != dt:
        return _core.cast(t, dt), True
    return t, fresh


def asarray(a: ArrayLike, dtype: DTypeLike = None) -> ndarray:
    """``a`` as an ndarray, sharing memory when it already is one, a ``Tensor``, or a
    C-contiguous buffer (numpy array, memoryview, array.array) of an engine dtype and of
    ``dtype``; other buffers, nested sequences and scalars are converted."""
    dt = None if dtype is None else _dtype_name(dtype)
    if isinstance(a, ndarray) and dt in (None, a.dtype):
        return a
    return _wrap(_convert(a, dt)[0])


def array(obj: ArrayLike, dtype: DTypeLike = None, *, copy: bool = True) -> ndarray:
    """A new array from ``obj`` (see ``asarray``); ``copy=False`` shares memory when it can."""
    t, fresh = _convert(obj, None if dtype is None else _dtype_name(dtype))
    return _wrap(t if fresh or not copy else _core.cast(t, t.dtype))


# ---- creation


def zeros(shape: int | Sequence[int], dtype: DTypeLike = float32) -> ndarray:
    return _wrap(Tensor.empty(_dtype_name(dtype), _shape_arg(shape)))


empty = zeros


def ones(shape: int | Sequence[int], dtype: DTypeLike = float32) -> ndarray:
    return full(shape, 1, dtype)


def full(shape: int | Sequence[int], fill_value: ArrayLike, dtype: DTypeLike = None) -> ndarray:
    fill = _arg(fill_value)
    if dtype is not None:
        dt = _dtype_name(dtype)
    else:
        dt = _scalar_dtype(fill) if isinstance(fill, _PY_SCALAR) else fill.dtype
    return _wrap(_broadcast(_tensor(fill, dt), _shape_arg(shape)))


def zeros_like(a: ArrayLike, dtype: DTypeLike = None, shape: Any = None) -> ndarray:
    return full_like(a, 0, dtype, shape)


empty_like = zeros_like


def ones_like(a: ArrayLike, dtype: DTypeLike = None, shape: Any = None) -> ndarray:
    return full_like(a, 1, dtype, shape)


def full_like(
    a: ArrayLike, fill_value: ArrayLike, dtype: DTypeLike = None, shape: Any = None
) -> ndarray:
    a = asarray(a)
    return full(
        a.shape if shape is None else shape, fill_value, a.dtype if dtype is None else dtype
    )


def arange(
    start: float, stop: float | None = None, step: float = 1, dtype: DTypeLike = None
) -> ndarray:
    """Evenly spaced values in [start, stop): int64 for integer arguments, else float32."""
    if stop is None:
        start, stop = 0, start
    if step == 0:
        raise ZeroDivisionError("arange: step must not be zero")
    integral = builtins.all(isinstance(v, int) for v in (start, stop, step))
    if integral:
        n = len(range(start, stop, step))
    else:
        n = builtins.max(0, math.ceil((stop - start) / step))
    dt = ("int64" if integral else "float32") if dtype is None else _dtype_name(dtype)
    _shape_arg(n)
    t = _core.arange(float(start), float(step), n, "int64" if dt == "bool" else dt)
    return _wrap(_cast(t, dt))


def linspace(
    start: float, stop: float, num: int = 50, endpoint: bool = True, dtype: DTypeLike = None
) -> ndarray:
    """``num`` evenly spaced values from start to stop (integer dtypes round down)."""
    if num < 0:
        raise ValueError(f"Number of samples, {num}, must be non-negative.")
    _shape_arg(num)
    div = num - 1 if endpoint else num
    step = (stop - start) / div if div > 0 else 0.0
    y = _wrap(_core.arange(float(start), step, num, "float32"))
    if endpoint and num > 1:
        y[-1] = stop
    dt = "float32" if dtype is None else _dtype_name(dtype)
    return y if dt == "float32" else floor(y).astype(dt)


def eye(N: int, M: int | None = None, k: int = 0, dtype: DTypeLike = float32) -> ndarray:
    """A 2-d array with ones on diagonal ``k`` and zeros elsewhere."""
    M = N if M is None else M
    dt = _dtype_name(dtype)
    t = Tensor.empty(dt, _shape_arg((N, M)))
    n = builtins.max(0, builtins.min(N, M - k) if k >= 0 else builtins.min(N + k, M))
    if n:
        _core.strided_copy(t, k if k >= 0 else -k * M, [M + 1], _scalar(1, dt), 0, [0], [n])
    return _wrap(t)


# ---- elementwise: binary


def _arith(op: str) -> Callable[[Tensor, Tensor, str], Tensor]:
    """add, sub, mul, max or min on tensors of dtype ``dt``."""

    def run(x: Tensor, y: Tensor, dt: str) -> Tensor:
        if dt == "bool":  # numpy's bool arithmetic is logic
            if op == "sub":
                raise TypeError(
                    "numpy boolean subtract, the `-` operator, is not supported, use the "
                    "bitwise_xor, the `^` operator, or the logical_xor function instead."
                )
            return _b("or" if op in ("add", "max") else "and", x, y)
        c = _COMPUTE.get(dt, dt)
        return _cast(_b(op, _cast(x, c), _cast(y, c)), dt)

    return run


def _int_compute(dt: str) -> str:
    return "int32" if dt in ("bool", "uint8") else dt


def _safe_divisor(y: Tensor) -> tuple[Tensor, Tensor | None]:
    """``y`` with -1 replaced by 1, and where it was -1 (None: nowhere), since the C
    division kernels trap on INT_MIN / -1."""
    if y.shape == () and _item(y) != -1:
        return y, None
    m1 = _b("eq", y, _scalar(-1, y.dtype))
    return _s(m1, _scalar(1, y.dtype), y), m1


def _fmod_fix(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """C's fmod(x, y) and where it needs y added to take the divisor's sign (numpy's %)."""
    zero = _scalar(0, "float32")
    r = _b("mod", x, y)
    fix = _b("and", _not(_b("eq", r, zero)), _b("xor", _b("lt", r, zero), _b("lt", y, zero)))
    return r, fix


def _mod(x: Tensor, y: Tensor, dt: str) -> Tensor:
    c = _int_compute(dt)
    x, y = _cast(x, c), _cast(y, c)
    if c == "float32":
        r, fix = _fmod_fix(x, y)
        return _s(fix, _b("add", r, y), r)
    ys, _ = _safe_divisor(y)
    return _cast(_b("mod", x, ys), "int32" if dt == "bool" else dt)


def _floordiv(x: Tensor, y: Tensor, dt: str) -> Tensor:
    c = _int_compute(dt)
    x, y = _cast(x, c), _cast(y, c)
    if c == "float32":  # numpy's npy_floor_divide, step for step
        one = _scalar(1, c)
        r, fix = _fmod_fix(x, y)
        d = _b("div", _b("sub", x, r), y)
        d = _s(fix, _b("sub", d, one), d)
        f = _u("floor", d)
        f = _s(_b("gt", _b("sub", d, f), _scalar(0.5, c)), _b("add", f, one), f)
        return _s(_b("eq", y, _scalar(0, c)), _b("div", x, y), f)
    ys, m1 = _safe_divisor(y)
    q = _b("div", x, ys)  # truncates (x / 0 is 0): one less when the remainder opposes y
    rem = _b("sub", x, _b("mul", q, ys))
    fix = _b("lt", _b("mul", rem, _u("sign", ys)), _scalar(0, c))
    q = _b("sub", q, _cast(fix, c))
    if m1 is not None:
        q = _s(m1, _u("neg", x), q)
    return _cast(q, "int32" if dt == "bool" else dt)


def _pow(x: Tensor, y: Tensor, dt: str) -> Tensor:
    c = _int_compute(dt)
    x, y = _cast(x, c), _cast(y, c)
    if (
        c != "float32"
        and math.prod(y.shape)
        and _item(_core.reduce("min", y, list(range(len(y.shape))), False)) < 0
    ):
        raise ValueError("Integers to negative integer powers are not allowed.")
    return _cast(_b("pow", x, y), "int32" if dt == "bool" else dt)


def _compare(op: str) -> Callable[[Tensor, Tensor, str], Tensor]:
    def run(x: Tensor, y: Tensor, dt: str) -> Tensor:
        c = _COMPUTE.get(dt, dt)
        r = _b("eq" if op == "ne" else op, _cast(x, c), _cast(y, c))
        return _not(r) if op == "ne" else r

    return run


def _logical(op: str) -> Callable[[Tensor, Tensor, str], Tensor]:
    return lambda x, y, dt: _b(op, _cast(x, "bool"), _cast(y, "bool"))


_KERNELS: dict[str, Callable[[Tensor, Tensor, str], Tensor]] = {
    **{op: _arith(op) for op in ("add", "sub", "mul", "max", "min")},
    "div": lambda x, y, dt: _b("div", x, y),
    "floordiv": _floordiv,
    "mod": _mod,
    "pow": _pow,
    **{op: _compare(op) for op in ("eq", "ne", "lt", "le", "gt", "ge")},
    **{op: _logical(op) for op in ("and", "or", "xor")},
}


def _binary(op: str, a: ArrayLike, b: ArrayLike) -> ndarray:
    a, b = _arg(a), _arg(b)
    if isinstance(a, _PY_SCALAR) and isinstance(b, _PY_SCALAR):
        dt = _promote(_scalar_dtype(a), _scalar_dtype(b))
    elif isinstance(a, _PY_SCALAR):
        dt = _weak(a, b.dtype)
    elif isinstance(b, _PY_SCALAR):
        dt = _weak(b, a.dtype)
    else:
        dt = _promote(a.dtype, b.dtype)
    dt = "float32" if op == "div" else "bool" if op in ("and", "or", "xor") else dt
    _broadcast_shapes(_shape(a), _shape(b))
    return _wrap(_KERNELS[op](_tensor(a, dt), _tensor(b, dt), dt))


def add(x1: ArrayLike, x2: ArrayLike) -> ndarray:
    """x1 + x2, elementwise with broadcasting (for bools: or)."""
    return _binary("add", x1, x2)


def subtract(x1: ArrayLike, x2: ArrayLike) -> ndarray:
    """x1 - x2, elementwise."""
    return _binary("sub", x1, x2)


def multiply(x1: ArrayLike, x2: ArrayLike) -> ndarray:
    """x1 * x2, elementwise (for bools: and)."""
    return _binary("mul", x1, x2)


def divide(x1: ArrayLike, x2: ArrayLike) -> ndarray:
    """x1 / x2, elementwise, always float32."""
    return _binary("div", x1, x2)


true_divide = divide


def floor_divide(x1: ArrayLike, x2: ArrayLike) -> ndarray:
    """x1 // x2, elementwise, rounding toward minus infinity (integer division by 0 is 0)."""
    return _binary("floordiv", x1, x2)


def mod(x1: ArrayLike, x2: ArrayLike) -> ndarray:
    """x1 % x2, elementwise, with the sign of the divisor as in Python."""
    return _binary("mod", x1, x2)


remainder = mod


def power(x1: ArrayLike, x2: ArrayLike) -> ndarray:
    """x1 ** x2, elementwise."""
    return _binary("pow", x1, x2)


def maximum(x1: ArrayLike, x2: ArrayLike) -> ndarray:
    """The larger of x1 and x2, elementwise; NaN propagates."""
    return _binary("max", x1, x2)


def minimum(x1: ArrayLike, x2: ArrayLike) -> ndarray:
    """The smaller of x1 and x2, elementwise; NaN propagates."""
    return _binary("min", x1, x2)


def equal(x1: ArrayLike, x2: ArrayLike) -> ndarray:
    return _binary("eq", x1, x2)


def not_equal(x1: ArrayLike, x2: ArrayLike) -> ndarray:
    return _binary("ne", x1, x2)


def less(x1: ArrayLike, x2: ArrayLike) -> ndarray:
    return _binary("lt", x1, x2)


def less_equal(x1: ArrayLike, x2: ArrayLike) -> ndarray:
    return _binary("le", x1, x2)


def greater(x1: ArrayLike, x2: ArrayLike) -> ndarray:
    return _binary("gt", x1, x2)


def greater_equal(x1: ArrayLike, x2: ArrayLike) -> ndarray:
    return _binary("ge", x1, x2)


def logical_and(x1: ArrayLike, x2: ArrayLike) -> ndarray:
    return _binary("and", x1, x2)


def logical_or(x1: ArrayLike, x2: ArrayLike) -> ndarray:
    return _binary("or", x1, x2)


def logical_xor(x1: ArrayLike, x2: ArrayLike) -> ndarray:
    return _binary("xor", x1, x2)


def logical_not(x: ArrayLike) -> ndarray:
    return _wrap(_not(_cast(asarray(x)._t, "bool")))


def _bitwise(op: str) -> Callable[[ArrayLike, ArrayLike], ndarray]:
    def run(x1: ArrayLike, x2: ArrayLike) -> ndarray:
        for v in (x1, x2):
            if not isinstance(v, bool) and (isinstance(v, int | float) or v.dtype != "bool"):
                raise TypeError(f"the engine supports `{op}` on bool arrays only")
        return _binary(op, x1, x2)

    return run


_bitwise_and, _bitwise_or, _bitwise_xor = _bitwise("and"), _bitwise("or"), _bitwise("xor")


# ---- elementwise: unary


def _float_unary(op: str, x: ArrayLike) -> ndarray:
    return _wrap(_u(op, _cast(asarray(x)._t, "float32")))


def exp(x: ArrayLike) -> ndarray:
    """e**x, elementwise (float32)."""
    return _float_unary("exp", x)


def log(x: ArrayLike) -> ndarray:
    """Natural logarithm, elementwise (float32)."""
    return _float_unary("log", x)


def sqrt(x: ArrayLike) -> ndarray:
    """Square root, elementwise (float32)."""
    return _float_unary("sqrt", x)


def tanh(x: ArrayLike) -> ndarray:
    return _float_unary("tanh", x)


def sin(x: ArrayLike) -> ndarray:
    return _float_unary("sin", x)


def cos(x: ArrayLike) -> ndarray:
    return _float_unary("cos", x)


def sigmoid(x: ArrayLike) -> ndarray:
    """1 / (1 + e**-x), elementwise (float32); not in numpy."""
    return _float_unary("sigmoid", x)


def _rounding(op: str, x: ArrayLike) -> ndarray:
    a = asarray(x)
    return _wrap(_u(op, a._t)) if a.dtype == "float32" else a.copy()  # integers stay


def floor(x: ArrayLike) -> ndarray:
    return _rounding("floor", x)


def ceil(x: ArrayLike) -> ndarray:
    return _rounding("ceil", x)


def round(x: ArrayLike, decimals: int = 0) -> ndarray:
    """Round half to even, to ``decimals`` places."""
    a = asarray(x)
    if a.dtype != "float32" and decimals >= 0:
        return a.copy()
    if decimals == 0:
        return _rounding("round", a)
    scale = 10.0**decimals
    r = divide(_rounding("round", multiply(a.astype(float32, copy=False), scale)), scale)
    return r if a.dtype == "float32" else r.astype(a.dtype)


def abs(x: ArrayLike) -> ndarray:
    a = asarray(x)
    if a.dtype == "bool":
        return a.copy()
    return _wrap(_cast(_u("abs", _cast(a._t, _COMPUTE.get(a.dtype, a.dtype))), a.dtype))


absolute = abs


def negative(x: ArrayLike) -> ndarray:
    a = asarray(x)
    if a.dtype == "bool":
        raise TypeError(
            "The numpy boolean negative, the `-` operator, is not supported, use the `~` "
            "operator or the logical_not function instead."
        )
    c = _COMPUTE.get(a.dtype, a.dtype)
    return _wrap(_cast(_u("neg", _cast(a._t, c)), a.dtype))


def sign(x: ArrayLike) -> ndarray:
    """-1, 0 or 1 by the sign of x, elementwise (NaN stays NaN)."""
    a = asarray(x)
    if a.dtype == "bool":
        raise TypeError("ufunc 'sign' did not contain a loop for bool")
    c = _COMPUTE.get(a.dtype, a.dtype)
    return _wrap(_cast(_u("sign", _cast(a._t, c)), a.dtype))


def square(x: ArrayLike) -> ndarray:
    a = asarray(x)
    return multiply(a, a)


def isnan(x: ArrayLike) -> ndarray:
    a = asarray(x)
    if a.dtype != "float32":
        return zeros(a.shape, bool_)
    return _wrap(_not(_b("eq", a._t, a._t)))


def isinf(x: ArrayLike) -> ndarray:
    a = asarray(x)
    if a.dtype != "float32":
        return zeros(a.shape, bool_)
    return _wrap(_b("eq", _u("abs", a._t), _scalar(math.inf, "float32")))


def isfinite(x: ArrayLike) -> ndarray:
    a = asarray(x)
    if a.dtype != "float32":
        return ones(a.shape, bool_)
    return _wrap(_b("lt", _u("abs", a._t), _scalar(math.inf, "float32")))  # NaN compares false


def clip(a: ArrayLike, a_min: ArrayLike = None, a_max: ArrayLike = None) -> ndarray:
    """``a`` limited to [a_min, a_max] (either may be None); NaN propagates."""
    r = asarray(a)
    if a_min is None and a_max is None:
        return r.copy()
    if a_min is not None:
        r = maximum(r, a_min)
    return r if a_max is None else minimum(r, a_max)


def where(condition: ArrayLike, x: ArrayLike = None, y: ArrayLike = None) -> Any:
    """Elements of ``x`` where ``condition`` holds, else of ``y``, broadcast; with only a
    condition, ``nonzero(condition)``."""
    if x is None and y is None:
        return nonzero(condition)
    if x is None or y is None:
        raise ValueError("either both or neither of x and y should be given")
    c, x, y = _cast(asarray(condition)._t, "bool"), _arg(x), _arg(y)
    if isinstance(x, _PY_SCALAR) and isinstance(y, _PY_SCALAR):
        dt = _promote(_scalar_dtype(x), _scalar_dtype(y))
    elif isinstance(x, _PY_SCALAR):
        dt = _weak(x, y.dtype)
    elif isinstance(y, _PY_SCALAR):
        dt = _weak(y, x.dtype)
    else:
        dt = _promote(x.dtype, y.dtype)
    _broadcast_shapes(c.shape, _shape(x), _shape(y))
    k = _COMPUTE.get(dt, dt)
    return _wrap(_cast(_s(c, _tensor(x, k), _tensor(y, k)), dt))


# ---- reductions


def _reduce(op: str, a: ArrayLike, axis: Axis, keepdims: bool, dtype: DTypeLike = None) -> ndarray:
    x = asarray(a, dtype)
    axes = (_axes if op == "mean" else _reduce_axes)(axis, x.ndim)
    if op in ("max", "min") and builtins.any(x.shape[i] == 0 for i in axes):
        name = "maximum" if op == "max" else "minimum"
        raise ValueError(f"zero-size array to reduction operation {name} which has no identity")
    dt = x.dtype
    if dtype is None and op in ("sum", "prod") and dt in ("bool", "uint8", "int32"):
        dt = "int64"  # like numpy on 64-bit platforms
    elif op == "mean":
        dt = "float32"
    c = _COMPUTE.get(dt, dt)
    t = _cast(x._t, c)
    return _wrap(_cast(_core.reduce(op, t, axes, keepdims), dt))


def sum(
    a: ArrayLike, axis: Axis = None, dtype: DTypeLike = None, *, keepdims: bool = False
) -> ndarray:
    """Sum over ``axis`` (all by default); bools and small integers sum as int64."""
    return _reduce("sum", a, axis, keepdims, dtype)


def prod(
    a: ArrayLike, axis: Axis = None, dtype: DTypeLike = None, *, keepdims: bool = False
) -> ndarray:
    return _reduce("prod", a, axis, keepdims, dtype)


def mean(
    a: ArrayLike, axis: Axis = None, dtype: DTypeLike = None, *, keepdims: bool = False
) -> ndarray:
    """Arithmetic mean over ``axis`` (float32); NaN for an empty selection."""
    return _reduce("mean", a, axis, keepdims, dtype)


def max(a: ArrayLike, axis: Axis = None, *, keepdims: bool = False) -> ndarray:
    return _reduce("max", a, axis, keepdims)


def min(a: ArrayLike, axis: Axis = None, *, keepdims: bool = False) -> ndarray:
    return _reduce("min", a, axis, keepdims)


def var(a: ArrayLike, axis: Axis = None, *, ddof: int = 0, keepdims: bool = False) -> ndarray:
    """Variance over ``axis``, dividing by N - ddof (float32)."""
    x = asarray(a, float32)
    axes = _axes(axis, x.ndim)
    d = _b("sub", x._t, _core.reduce("mean", x._t, axes, True))
    s = _core.reduce("sum", _b("mul", d, d), axes, keepdims)
    n = math.prod(x.shape[i] for i in axes) - ddof
    return _wrap(_b("div", s, _scalar(builtins.max(n, 0), "float32")))


def std(a: ArrayLike, axis: Axis = None, *, ddof: int = 0, keepdims: bool = False) -> ndarray:
    """Standard deviation over ``axis``, dividing by N - ddof (float32)."""
    return sqrt(var(a, axis, ddof=ddof, keepdims=keepdims))


def _logic_reduce(op: str, a: ArrayLike, axis: Axis, keepdims: bool) -> ndarray:
    x = asarray(a)
    axes = _reduce_axes(axis, x.ndim)
    out = [1 if i in axes else n for i, n in enumerate(x.shape) if keepdims or i not in axes]
    if builtins.any(x.shape[i] == 0 for i in axes):
        return full(out, op == "min", bool_)
    t = _cast(_cast(x._t, "bool"), "float32")
    return _wrap(_cast(_core.reduce(op, t, axes, keepdims), "bool"))


def any(a: ArrayLike, axis: Axis = None, *, keepdims: bool = False) -> ndarray:
    """Whether any element over ``axis`` is nonzero."""
    return _logic_reduce("max", a, axis, keepdims)


def all(a: ArrayLike, axis: Axis = None, *, keepdims: bool = False) -> ndarray:
    """Whether every element over ``axis`` is nonzero."""
    return _logic_reduce("min", a, axis, keepdims)


def _arg_extreme(op: str, a: ArrayLike, axis: int | None, keepdims: bool) -> ndarray:
    x = asarray(a)
    ndim = x.ndim
    x, ax = (x.ravel(), 0) if axis is None or ndim == 0 else (x, _axes(axis, ndim)[0])
    _reduce_axes(axis, ndim)
    if x.shape[ax] == 0:
        raise ValueError(f"attempt to get {op} of an empty sequence")
    t = _cast(x._t, _COMPUTE.get(x.dtype, x.dtype))
    if op == "argmax":
        r = _core.argmax(t, ax, keepdims, False)
    else:  # the first element equal to the minimum
        r = _core.argmax(_b("eq", t, _core.reduce("min", t, [ax], True)), ax, keepdims, False)
    if _has_nan(t):  # the first NaN wins, as in numpy
        nan_in = _not(_b("eq", t, t))
        has = _cast(_core.reduce("max", _cast(nan_in, "float32"), [ax], keepdims), "bool")
        r = _s(has, _core.argmax(nan_in, ax, keepdims, False), r)
    if (axis is None and keepdims) or ndim == 0:
        r = _core.view(r, 0, [1] * ndim if keepdims else [])
    return _wrap(r)


def argmax(a: ArrayLike, axis: int | None = None, *, keepdims: bool = False) -> ndarray:
    """Index of the first maximum along ``axis`` (of the flattened array by default)."""
    return _arg_extreme("argmax", a, axis, keepdims)


def argmin(a: ArrayLike, axis: int | None = None, *, keepdims: bool = False) -> ndarray:
    """Index of the first minimum along ``axis`` (of the flattened array by default)."""
    return _arg_extreme("argmin", a, axis, keepdims)


# ---- shape manipulation


def reshape(a: ArrayLike, shape: int | Sequence[int]) -> ndarray:
    """A view of ``a`` with a new shape; one dimension may be -1 (inferred)."""
    x = asarray(a)
    dims = [operator.index(d) for d in ([shape] if not isinstance(shape, Sequence) else shape)]
    size = x.size
    if dims.count(-1) > 1:
        raise ValueError("can only specify one unknown dimension")
    if builtins.any(d < -1 for d in dims):
        raise ValueError("negative dimensions not allowed")
    if -1 in dims:
        known = math.prod(d for d in dims if d != -1)
        if known and size % known == 0:
            dims[dims.index(-1)] = size // known
    if math.prod(dims) != size or -1 in dims:
        raise ValueError(f"cannot reshape array of size {size} into shape {tuple(dims)}")
    return _wrap(_core.view(x._t, 0, _shape_arg(dims)))


def ravel(a: ArrayLike) -> ndarray:
    return reshape(a, -1)


def _transpose(t: Tensor, perm: Sequence[int]) -> Tensor:
    if list(perm) == sorted(perm):
        return t
    shape, st = t.shape, _strides(t.shape)
    out_shape = [shape[p] for p in perm]
    out = Tensor.empty(t.dtype, out_shape)
    _core.strided_copy(out, 0, _strides(out_shape), t, 0, [st[p] for p in perm], out_shape)
    return out


def transpose(a: ArrayLike, axes: Sequence[int] | None = None) -> ndarray:
    """``a`` with its axes permuted (reversed by default), as a copy."""
    x = asarray(a)
    if axes is None:
        perm = list(range(x.ndim))[::-1]
    else:
        if len(axes) != x.ndim:
            raise ValueError("axes don't match array")
        perm = [_axes(ax, x.ndim)[0] for ax in axes]
        if len(set(perm)) != len(perm):
            raise ValueError("repeated axis in transpose")
    return _wrap(_transpose(x._t, perm))


def expand_dims(a: ArrayLike, axis: int | Sequence[int]) -> ndarray:
    """A view of ``a`` with unit dims inserted at ``axis``."""
    x = asarray(a)
    n = x.ndim + (len(axis) if isinstance(axis, Sequence) else 1)
    axes = set(_axes(axis, n))
    dims = iter(x.shape)
    return _wrap(_core.view(x._t, 0, [1 if i in axes else next(dims) for i in range(n)]))


def squeeze(a: ArrayLike, axis: Axis = None) -> ndarray:
    """A view of ``a`` without unit dims (all, or those in ``axis``)."""
    x = asarray(a)
    if axis is None:
        axes = [i for i, n in enumerate(x.shape) if n == 1]
    else:
        axes = _axes(axis, x.ndim)
        if builtins.any(x.shape[i] != 1 for i in axes):
            raise ValueError("cannot select an axis to squeeze out which has size not equal to one")
    return _wrap(_core.view(x._t, 0, [n for i, n in enumerate(x.shape) if i not in axes]))


def concatenate(arrays: Sequence[ArrayLike], axis: int | None = 0) -> ndarray:
    """The arrays joined along an existing axis (flattened first when ``axis`` is None)."""
    xs = [asarray(a) for a in arrays]
    if not xs:
        raise ValueError("need at least one array to concatenate")
    if axis is None:
        xs, axis = [x.ravel() for x in xs], 0
    nd = xs[0].ndim
    if nd == 0:
        raise ValueError("zero-dimensional arrays cannot be concatenated")
    ax = _axes(axis, nd)[0]
    for i, x in enumerate(xs):
        if x.ndim != nd:
            raise ValueError(
                "all the input arrays must have same number of dimensions, but the array at "
                f"index 0 has {nd} dimension(s) and the array at index {i} has {x.ndim} "
                "dimension(s)"
            )
        for d in range(nd):
            if d != ax and x.shape[d] != xs[0].shape[d]:
                raise ValueError(
                    "all the input array dimensions except for the concatenation axis must "
                    f"match exactly, but along dimension {d}, the array at index 0 has size "
                    f"{xs[0].shape[d]} and the array at index {i} has size {x.shape[d]}"
                )
    dt = _promote(*(x.dtype for x in xs))
    shape = list(xs[0].shape)
    outer, inner = math.prod(shape[:ax]), math.prod(shape[ax + 1 :])
    total = builtins.sum(x.shape[ax] for x in xs)
    regions, offset = [], 0
    for i, x in enumerate(xs):
        n = x.shape[ax] * inner
        regions.append((i, 0, offset, [outer, n], [n, 1], [total * inner, 1]))
        offset += n
    shape[ax] = total
    return _wrap(_core.raster([_cast(x._t, dt) for x in xs], regions, shape))


def stack(arrays: Sequence[ArrayLike], axis: int = 0) -> ndarray:
    """The arrays (all of one shape) joined along a new axis."""
    xs = [asarray(a) for a in arrays]
    if not xs:
        raise ValueError("need at least one array to stack")
    if builtins.any(x.shape != xs[0].shape for x in xs):
        raise ValueError("all input arrays must have the same shape")
    ax = _axes(axis, xs[0].ndim + 1)[0]
    return concatenate([expand_dims(x, ax) for x in xs], ax)


def broadcast_to(a: ArrayLike, shape: int | Sequence[int]) -> ndarray:
    """``a`` broadcast to ``shape``, as a copy."""
    return _wrap(_broadcast(asarray(a)._t, _shape_arg(shape)))


def take(a: ArrayLike, indices: ArrayLike, axis: int | None = None) -> ndarray:
    """Elements of ``a`` at ``indices`` along ``axis`` (of the flattened array by default)."""
    x = asarray(a)
    x, ax = (x.ravel(), 0) if axis is None else (x, _axes(axis, x.ndim)[0])
    i = asarray(indices)
    if i.dtype in ("float32", "bool") and i.size:
        raise IndexError("arrays used as indices must be of integer type")
    return _wrap(_core.take(x._t, _cast(i._t, "int64"), ax))


def nonzero(a: ArrayLike) -> tuple[ndarray, ...]:
    """The indices of the nonzero elements, one int64 array per dimension."""
    x = asarray(a)
    if x.ndim == 0:
        raise ValueError(
            "Calling nonzero on 0d arrays is not allowed. Use np.atleast_1d(scalar).nonzero() instead."
        )
    flat = _core.flatnonzero(x._t)
    return tuple(
        _wrap(_b("mod", _b("div", flat, _scalar(s, "int64")), _scalar(n, "int64")))
        for n, s in zip(x.shape, _strides(x.shape), strict=True)
    )


# ---- sorting


def _along(a: ArrayLike, axis: int | None) -> tuple[ndarray, int]:
    x = asarray(a)
    return (x.ravel(), 0) if axis is None else (x, _axes(axis, x.ndim)[0])


def sort(a: ArrayLike, axis: int | None = -1) -> ndarray:
    """A sorted copy along ``axis`` (flattened when None); NaN sorts last."""
    x, ax = _along(a, axis)
    values, _ = _core.sort(_cast(x._t, _COMPUTE.get(x.dtype, x.dtype)), ax)
    return _wrap(_cast(values, x.dtype))


def argsort(a: ArrayLike, axis: int | None = -1) -> ndarray:
    """Indices that sort ``a`` along ``axis`` (stable; NaN last)."""
    x, ax = _along(a, axis)
    return _wrap(_core.sort(_cast(x._t, _COMPUTE.get(x.dtype, x.dtype)), ax)[1])


def topk(a: ArrayLike, k: int, axis: int = -1, largest: bool = True) -> tuple[ndarray, ndarray]:
    """The ``k`` largest (or smallest) values along ``axis`` and their indices, best first;
    ties keep index order, NaN counts as the largest value."""
    x, ax = _along(a, axis)
    k = operator.index(k)
    if k < 0:
        raise ValueError(f"k must be non-negative, got {k}")
    if k > x.shape[ax]:
        raise ValueError(f"k = {k} is out of range for axis {ax} of size {x.shape[ax]}")
    values, indices = _core.sort(_cast(x._t, _COMPUTE.get(x.dtype, x.dtype)), ax, k, largest)
    return _wrap(_cast(values, x.dtype)), _wrap(indices)


# ---- linear algebra


def matmul(x1: ArrayLike, x2: ArrayLike) -> ndarray:
    """Matrix product with numpy's rules: 1-d operands act as a row / column, leading dims
    broadcast. float32 runs on the GEMM kernels; integer and bool products are exact."""
    a, b = asarray(x1), asarray(x2)
    for i, x in enumerate((a, b)):
        if x.ndim == 0:
            raise ValueError(
                f"matmul: Input operand {i} does not have enough dimensions (has 0, gufunc "
                "core with signature (n?,k),(k,m?)->(n?,m?) requires 1)"
            )
    am = a if a.ndim > 1 else reshape(a, (1, -1))
    bm = b if b.ndim > 1 else reshape(b, (-1, 1))
    k, k2 = am.shape[-1], bm.shape[-2]
    if k != k2:
        raise ValueError(
            "matmul: Input operand 1 has a mismatch in its core dimension 0, with gufunc "
            f"signature (n?,k),(k,m?)->(n?,m?) (size {k2} is different from {k})"
        )
    batch = _broadcast_shapes(am.shape[:-2], bm.shape[:-2])
    dt = _promote(a.dtype, b.dtype)
    m, n = am.shape[-2], bm.shape[-1]
    if dt != "float32":
        prod_ = multiply(expand_dims(am.astype(dt, copy=False), -1), expand_dims(bm, -3))
        r = sum(prod_, -2).astype(dt) if dt != "bool" else any(prod_, -2)
    elif k == 0:
        r = zeros((*batch, m, n))
    else:
        r = _wrap(_core.matmul(_cast(am._t, dt), _cast(bm._t, dt)))
    out = list(r.shape)
    if b.ndim == 1:
        del out[-1]
    if a.ndim == 1:
        del out[-2 if b.ndim > 1 else -1]
    return reshape(r, out)


def dot(a: ArrayLike, b: ArrayLike) -> ndarray:
    """numpy.dot: products of scalars, matmul for 1-d and 2-d operands, and for N-d a sum
    over the last axis of ``a`` and the second-to-last of ``b``."""
    x, y = asarray(a), asarray(b)
    if x.ndim == 0 or y.ndim == 0:
        return multiply(x, y)
    if y.ndim <= 2:
        if x.shape[-1] != y.shape[0]:
            raise ValueError(
                f"shapes {x.shape} and {y.shape} not aligned: {x.shape[-1]} (dim {x.ndim - 1}) "
                f"!= {y.shape[0]} (dim 0)"
            )
        return matmul(x, y)
    k = x.shape[-1]
    if y.shape[-2] != k:
        raise ValueError(
            f"shapes {x.shape} and {y.shape} not aligned: {k} (dim {x.ndim - 1}) != "
            f"{y.shape[-2]} (dim {y.ndim - 2})"
        )
    perm = [y.ndim - 2] + [i for i in range(y.ndim) if i != y.ndim - 2]
    r = matmul(reshape(x, (-1, k)), reshape(transpose(y, perm), (k, -1)))
    return reshape(r, x.shape[:-1] + y.shape[:-2] + y.shape[-1:])


# ---- comparison of whole arrays


def isclose(
    a: ArrayLike, b: ArrayLike, rtol: float = 1e-05, atol: float = 1e-08, equal_nan: bool = False
) -> ndarray:
    """|a - b| <= atol + rtol * |b|, elementwise (in float32); infinities match themselves."""
    x, y = asarray(a, float32), asarray(b, float32)
    close = less_equal(abs(subtract(x, y)), add(atol, multiply(rtol, abs(y))))
    r = logical_or(logical_and(close, isfinite(y)), equal(x, y))
    return logical_or(r, logical_and(isnan(x), isnan(y))) if equal_nan else r


def allclose(
    a: ArrayLike, b: ArrayLike, rtol: float = 1e-05, atol: float = 1e-08, equal_nan: bool = False
) -> bool:
    """Whether ``isclose`` holds everywhere."""
    return bool(all(isclose(a, b, rtol, atol, equal_nan)))


def array_equal(a1: ArrayLike, a2: ArrayLike, equal_nan: bool = False) -> bool:
    """Whether both have the same shape and elements."""
    x, y = asarray(a1), asarray(a2)
    if x.shape != y.shape:
        return False
    eq = equal(x, y)
    if equal_nan:
        eq = logical_or(eq, logical_and(isnan(x), isnan(y)))
    return bool(all(eq))


# ---- printing (numpy's default print options: precision 8, threshold 1000, edge items 3,
# line width 75)


def _f32(v: float) -> float:
    return struct.unpack("f", struct.pack("f", v))[0]


def _shortest(v: float) -> str:
    """The fewest significant digits that read back as the same float32, as '%.Ne'."""
    for p in range(9):
        s = f"{v:.{p}e}"
        if _f32(float(s)) == v:
            return s
    return f"{v:.8e}"


def _positional(v: float) -> str:
    s = format(Decimal(_shortest(v)), "f")
    if "." in s and len(s.split(".")[1]) > 8:
        s = f"{v:.8f}".rstrip("0")
    return s if "." in s else s + "."


def _scientific(v: float) -> tuple[str, str, str]:
    """(integer digit, fraction digits, exponent) of the shortest float32 form."""
    s = _shortest(v)
    mantissa, exponent = s.split("e")
    if len(mantissa.split(".")[-1]) > 8 and "." in mantissa:
        mantissa = f"{v:.8e}".split("e")[0].rstrip("0")
    i, _, f = mantissa.partition(".")
    return i, f, exponent


def _float_formatter(values: list[float]) -> Callable[[float], str]:
    finite = [v for v in values if math.isfinite(v)]
    nonzero = [builtins.abs(v) for v in finite if v != 0]
    big, small = (builtins.max(nonzero), builtins.min(nonzero)) if nonzero else (0, 0)
    exp_mode = bool(nonzero) and (big >= 1e8 or small < 1e-4 or big / small > 1e3)
    if exp_mode:
        parts = [_scientific(v) for v in finite]
        precision = builtins.max(len(f) for _, f, _ in parts)
        pad_left = builtins.max(len(i) for i, _, _ in parts)
        exp_size = builtins.max(len(x) for _, _, x in parts) - 1
        pad_right = exp_size + 2 + precision
    else:
        split = [_positional(v).split(".") for v in finite]
        pad_left = builtins.max((len(i) for i, _ in split), default=0)
        pad_right = builtins.max((len(f) for _, f in split), default=0)
    if len(finite) != len(values):
        neginf = builtins.any(v == -math.inf for v in values)
        pad_left = builtins.max(pad_left, 3 - (pad_right + 1), 3 + neginf - (pad_right + 1))

    def fmt(v: float) -> str:
        if not math.isfinite(v):
            s = "nan" if v != v else "inf" if v > 0 else "-inf"
            return s.rjust(pad_left + pad_right + 1)
        if exp_mode:
            i, f, x = _scientific(v)
            return f"{i.rjust(pad_left)}.{f.ljust(precision, '0')}e{x[0]}{x[1:].zfill(exp_size)}"
        i, f = _positional(v).split(".")
        return f"{i.rjust(pad_left)}.{f.ljust(pad_right)}"

    return fmt


def _formatter(values: list[Any], dt: str) -> Callable[[Any], str]:
    if dt == "float32":
        return _float_formatter(values)
    if dt == "bool":
        return lambda v: str(v).rjust(5)
    width = builtins.max(len(str(v)) for v in values)
    return lambda v: str(v).rjust(width)


def _edges(x: ndarray) -> ndarray:
    """x with every axis longer than 6 cut to its first and last 3 items (summarising)."""
    for ax, n in enumerate(x.shape):
        if n > 6:
            lead = (slice(None),) * ax
            x = concatenate([x[(*lead, slice(0, 3))], x[(*lead, slice(n - 3, n))]], ax)
    return x


def _array2string(x: ndarray, sep: str, prefix: str, suffix: str) -> str:
    summarize = x.size > 1000
    data = (_edges(x) if summarize else x).tolist()
    flat = data
    for _ in range(x.ndim - 1):
        flat = [v for row in flat for v in row]
    fmt = (
        _formatter(flat, x.dtype)
        if x.ndim
        else str
        if x.dtype == "bool"
        else _formatter([data], x.dtype)
    )
    shape = x.shape

    def extend(s: str, line: str, word: str, width: int, indent: str) -> tuple[str, str]:
        if len(line) + len(word) > width and len(line) > len(indent):
            s += line.rstrip() + "\n"
            line = indent
        return s, line + word

    def rec(d: Any, level: int, indent: str, width: int) -> str:
        left = len(shape) - level
        if left == 0:
            return fmt(d)
        show = summarize and shape[level] > 6
        lead, trail = (d[:3], d[3:]) if show else ([], d)
        inner = [rec(v, level + 1, indent + " ", width - 1) for v in lead]
        rest = [rec(v, level + 1, indent + " ", width - 1) for v in trail]
        if left == 1:
            elem_width = width - builtins.max(len(sep.rstrip()), 1)
            s, line = "", indent
            words = [*inner, *(["..."] if show else []), *rest]
            for i, w in enumerate(words):
                s, line = extend(s, line, w, elem_width, indent)
                if i < len(words) - 1:
                    line += sep
            s += line
        else:
            rows = [*inner, *(["..."] if show else []), *rest]
            s = (sep.rstrip() + "\n" * (left - 1)).join(indent + r for r in rows)
        return "[" + s[len(indent) :] + "]"

    return rec(data, 0, " " + " " * len(prefix), 75 - len(suffix))


def _repr(x: ndarray) -> str:
    prefix = "array("
    body = "[]" if x.size == 0 else _array2string(x, ", ", prefix, ")")
    extras = []
    if (x.size == 0 and x.shape != (0,)) or x.size > 1000:
        extras.append(f"shape={x.shape}")
    if x.dtype not in ("int64", "bool") or x.size == 0:
        extras.append(f"dtype={x.dtype}")
    if not extras:
        return prefix + body + ")"
    s = prefix + body + ","
    extra = ", ".join(extras)
    last = len(s) - (s.rfind("\n") + 1)
    spacer = "\n" + " " * len(prefix) if last + len(extra) + 1 > 75 else " "
    return s + spacer + extra + ")"


def _str(x: ndarray) -> str:
    if x.ndim == 0:
        v = x.item()
        return repr(float(_shortest(v))) if x.dtype == "float32" and math.isfinite(v) else str(v)
    return "[]" if x.size == 0 else _array2string(x, " ", "", "")
