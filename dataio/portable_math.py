"""exp, log, log1p and sigmoid on float64 arrays that give the same bits on every CPU and NumPy.

NumPy's np.exp, np.log, np.power, np.tanh ... pick a SIMD implementation per CPU (SVML, AVX-512,
AVX2, scalar) at run time, and those are not correctly rounded: the last bit differs between
dispatch targets, so a value compared with a threshold (a label drawn as u < p, an id by inverse
CDF, floor(exp(y))) can flip from one machine to the next. The functions here use only operations
whose result IEEE 754 specifies exactly, each as its own NumPy ufunc call: +, -, *, / (never fused
into an FMA across calls), rint, floor, comparisons, and integer bit operations to build 2^k and to
split x into mantissa and exponent. The algorithms are fdlibm's (range reduction by ln 2, then a
minimax polynomial; error below 1 ulp), so the results are also accurate, not only repeatable.

Domain: finite or infinite float64; NaN inputs give unspecified values (no caller passes NaN).
exp flushes results below 2^-1022 * 2^-53 to 0; log needs x > 0 or x = 0 (-> -inf).
"""
from __future__ import annotations

import numpy as np

LN2_HI = 6.93147180369123816490e-01      # ln 2 to 32 bits: k * LN2_HI is exact for |k| < 2^20
LN2_LO = 1.90821492927058770002e-10      # ln 2 - LN2_HI
INV_LN2 = 1.44269504088896338700e+00
# exp(r) = 1 + r + r c / (2 - c) with c = r - r^2 (P1 + r^2 (P2 + ...)) on |r| <= ln2 / 2 (fdlibm e_exp.c)
_P = (1.66666666666666019037e-01, -2.77777777770155933842e-03, 6.61375632143793436117e-05,
      -1.65339022054652515390e-06, 4.13813679705723846039e-08)
# log(1 + f) = f - f^2/2 + s (f^2/2 + R(s^2)), s = f / (2 + f), on sqrt(2)/2 <= 1 + f <= sqrt(2) (e_log.c)
_LG = (6.666666666666735130e-01, 3.999999999940941908e-01, 2.857142874366239149e-01, 2.222219843214978396e-01,
       1.818357216161805012e-01, 1.531383769920937332e-01, 1.479819860511658591e-01)
_MANTISSA_BITS = (1 << 52) - 1
_SQRT2 = 1.4142135623730951
BLOCK = 1 << 16          # elements per pass: the temporaries stay in cache (10x faster than whole arrays)


def _blockwise(fn):
    """fn on a 1-D float64 block -> the same function on any array, evaluated BLOCK elements at a time."""
    def on_blocks(x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        flat = x.ravel()
        out = np.empty(flat.shape, dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for i in range(0, flat.size, BLOCK):
                out[i:i + BLOCK] = fn(flat[i:i + BLOCK])
        return out.reshape(x.shape)
    on_blocks.__name__, on_blocks.__doc__ = fn.__name__.lstrip("_"), fn.__doc__
    return on_blocks


def _two_to(k: np.ndarray) -> np.ndarray:
    """2.0 ** k for int64 k in [-1022, 1023], from the bits (exact)."""
    return ((k + 1023) << 52).view(np.float64)


def _exp(x) -> np.ndarray:
    """e^x elementwise (error < 1 ulp), bitwise the same everywhere."""
    x = np.clip(x, -746.0, 710.0)   # beyond: 0 and inf, as np.exp
    k = np.rint(x * INV_LN2)
    hi = x - k * LN2_HI                                              # exact (Cody-Waite)
    lo = k * LN2_LO
    r = hi - lo
    t = r * r
    c = _P[4] * t
    for p in _P[3::-1]:
        c += p
        c *= t
    c = r - c
    y = r * c
    y /= 2.0 - c
    y = lo - y
    y -= hi
    y = 1.0 - y                                                      # e^r in [0.7, 1.42]
    k = k.astype(np.int64)
    half = k >> 1                                                    # two exact scalings: 2^k may not be a double
    y *= _two_to(half)
    y *= _two_to(k - half)
    return y


def _log(x) -> np.ndarray:
    """ln x elementwise for x >= 0 (error < 1 ulp; ln 0 = -inf, ln inf = inf), bitwise the same everywhere."""
    tiny = x < 2.2250738585072014e-308                                # subnormal or 0: scale by 2^54 first
    xs = np.where(tiny, x * 18014398509481984.0, x)
    bits = xs.view(np.int64)
    e = (bits >> 52) - np.where(tiny, 1023 + 54, 1023)
    m = ((bits & _MANTISSA_BITS) | (1023 << 52)).view(np.float64)    # x = m 2^e, m in [1, 2)
    big = m > _SQRT2
    m = np.where(big, m * 0.5, m)                                     # m in [sqrt(2)/2, sqrt(2)]
    k = (e + big).astype(np.float64)
    f = m - 1.0                                                        # exact
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    t1 = _LG[5] * w
    t1 += _LG[3]
    t1 *= w
    t1 += _LG[1]
    t1 *= w                                                           # w (Lg2 + w (Lg4 + w Lg6))
    t2 = _LG[6] * w
    t2 += _LG[4]
    t2 *= w
    t2 += _LG[2]
    t2 *= w
    t2 += _LG[0]
    t2 *= z                                                           # z (Lg1 + w (Lg3 + w (Lg5 + w Lg7)))
    r = t1 + t2
    hfsq = 0.5 * f
    hfsq *= f
    out = r + hfsq
    out *= s
    out += k * LN2_LO
    out = hfsq - out
    out -= f
    out = k * LN2_HI - out
    out = np.where(x == np.inf, np.inf, out)
    return np.where(x == 0.0, -np.inf, out)


def _log1p(x) -> np.ndarray:
    """ln(1 + x) elementwise for x >= -1, accurate for small x: ln(u) + (x - (u - 1)) / u with u = 1 + x."""
    u = 1.0 + x
    correction = u - 1.0
    np.subtract(x, correction, out=correction)                        # the rounding error of 1 + x
    correction /= u
    out = _log(u)
    out += np.where(np.isfinite(u), correction, 0.0)
    return out


def _sigmoid(x) -> np.ndarray:
    """1 / (1 + e^-x) elementwise, bitwise the same everywhere (0 and 1 at the far ends)."""
    e = _exp(-x)
    e += 1.0
    return np.divide(1.0, e, out=e)


exp, log, log1p, sigmoid = (_blockwise(f) for f in (_exp, _log, _log1p, _sigmoid))
