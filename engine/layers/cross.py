"""Cross networks of DCN, DCN-v2 and DCN-Mix. Symbols: B batch, d input width (F*K + D),
E experts, r low rank. x0 is the network's input, xl the output of layer l, both (B, d).

v1 (DCN, "vector"):          x_{l+1} = x0 * (xl . w_l) + b_l + xl          w_l, b_l (d,)
v2 (DCN-v2, full rank):      x_{l+1} = x0 * (xl W_l^T + b_l) + xl          W_l (d, d), b_l (d,)
mix (DCN-Mix, the reference's "DCNv2"): per layer, E low-rank experts mixed by a softmax gate,
    a_e = tanh(xl V_e)   c_e = tanh(a_e C_e^T)   o_e = x0 * (c_e U_e^T + b_l)
    p   = softmax_e(xl G)                       x_{l+1} = sum_e p_e * o_e + xl
    U_e, V_e (d, r), C_e (r, r), b_l (d,); the gate G (d, E) is shared by all layers (DeepCTR
    makes one Dense(1, no bias) per expert and applies it at every layer).
"""
from dataio.arrays import array_module_of

# --------------------------------------------------------------------------------------------
# v1


def cross_v1_forward(x0, ws, bs):
    """x0 (B, d), ws/bs lists of (d,) -> out (B, d)."""
    xl = x0
    caches = []
    for w, b in zip(ws, bs):
        s = xl @ w                                   # (B,)
        caches.append((xl, s))
        xl = x0 * s[:, None] + b + xl                # (B, d)
    return xl, (x0, ws, caches)


def cross_v1_backward(dout, cache):
    """dout (B, d) -> (dx0 (B, d), [dw], [db])."""
    x0, ws, caches = cache
    dx0 = 0
    dws, dbs = [], []
    g = dout                                          # d x_{l+1}
    for w, (xl, s) in zip(reversed(ws), reversed(caches)):
        dx0 = dx0 + g * s[:, None]
        ds = (g * x0).sum(axis=1)                     # (B,)
        dws.append(xl.T @ ds)                         # (d,)
        dbs.append(g.sum(axis=0))                     # (d,)
        g = g + ds[:, None] * w[None, :]              # d xl
    return dx0 + g, dws[::-1], dbs[::-1]


# --------------------------------------------------------------------------------------------
# v2, full rank


def cross_v2_forward(x0, Ws, bs):
    """x0 (B, d), Ws list of (d, d), bs list of (d,) -> out (B, d)."""
    xl = x0
    caches = []
    for W, b in zip(Ws, bs):
        z = xl @ W.T + b                              # (B, d)
        caches.append((xl, z))
        xl = x0 * z + xl
    return xl, (x0, Ws, caches)


def cross_v2_backward(dout, cache):
    """dout (B, d) -> (dx0, [dW], [db])."""
    x0, Ws, caches = cache
    dx0 = 0
    dWs, dbs = [], []
    g = dout
    for W, (xl, z) in zip(reversed(Ws), reversed(caches)):
        dx0 = dx0 + g * z
        dz = g * x0                                   # (B, d)
        dWs.append(dz.T @ xl)                         # (d, d)
        dbs.append(dz.sum(axis=0))
        g = g + dz @ W
    return dx0 + g, dWs[::-1], dbs[::-1]


# --------------------------------------------------------------------------------------------
# mix of low-rank experts


def _softmax(scores):
    xp = array_module_of(scores)
    e = xp.exp(scores - scores.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def cross_mix_forward(x0, Us, Vs, Cs, bs, gate):
    """x0 (B, d); per layer U, V (E, d, r), C (E, r, r), b (d,); gate (d, E) -> out (B, d)."""
    xp = array_module_of(x0)
    xl = x0
    caches = []
    for U, V, C, b in zip(Us, Vs, Cs, bs):
        p = _softmax(xl @ gate)                       # (B, E)
        experts = []
        mixed = xp.zeros_like(x0)
        for e in range(U.shape[0]):
            a = xp.tanh(xl @ V[e])                    # (B, r)
            c = xp.tanh(a @ C[e].T)                   # (B, r)
            inner = c @ U[e].T + b                    # (B, d)
            o = x0 * inner
            mixed += p[:, e:e + 1] * o
            experts.append((a, c, inner, o))
        caches.append((xl, p, experts))
        xl = mixed + xl
    return xl, (x0, Us, Vs, Cs, gate, caches)


def cross_mix_backward(dout, cache):
    """dout (B, d) -> (dx0, [dU], [dV], [dC], [db], dgate)."""
    x0, Us, Vs, Cs, gate, caches = cache
    xp = array_module_of(x0)
    dx0 = 0
    dgate = xp.zeros_like(gate)
    dUs, dVs, dCs, dbs = [], [], [], []
    g = dout
    for U, V, C, (xl, p, experts) in zip(reversed(Us), reversed(Vs), reversed(Cs), reversed(caches)):
        dxl = g                                       # the residual
        dU, dV, dC = xp.zeros_like(U), xp.zeros_like(V), xp.zeros_like(C)
        db = 0
        dp = xp.empty_like(p)                         # (B, E)
        for e, (a, c, inner, o) in enumerate(experts):
            dp[:, e] = (g * o).sum(axis=1)
            do = g * p[:, e:e + 1]                    # (B, d)
            dx0 = dx0 + do * inner
            dinner = do * x0                          # (B, d)
            db = db + dinner.sum(axis=0)
            dU[e] = dinner.T @ c                      # (d, r)
            dpre_c = (dinner @ U[e]) * (1 - c * c)    # (B, r)
            dC[e] = dpre_c.T @ a                      # (r, r)
            dpre_a = (dpre_c @ C[e]) * (1 - a * a)    # (B, r)
            dV[e] = xl.T @ dpre_a                     # (d, r)
            dxl = dxl + dpre_a @ V[e].T
        dscores = p * (dp - (dp * p).sum(axis=1, keepdims=True))  # softmax backward, (B, E)
        dgate += xl.T @ dscores
        dxl = dxl + dscores @ gate.T
        dUs.append(dU)
        dVs.append(dV)
        dCs.append(dC)
        dbs.append(db)
        g = dxl
    return dx0 + g, dUs[::-1], dVs[::-1], dCs[::-1], dbs[::-1], dgate
