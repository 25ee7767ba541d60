"""Adam on every weight (all parameters but the tables; engine/step.py's glossary) in one launch.
Symbols: T tensors, P = their total number of elements.

Per element, with lambda the tensor's L2 weight (0 for the DNN and biases; engine/step.py):

    g <- grad + 2 * lambda * w,    then Adam as engine/kernels/adam.py (`adam_element`)

Layout: NumPy form (a loop over the tensors, any array module: the plain form, which costs
about five launches per tensor on a GPU), then the Numba CUDA version: weights and both moments
live in three flat [P] buffers, and params[name], m[name], v[name] are rebound, once, to views
into them (`WeightsAdamCuda` repacks whenever an entry is no longer its view, e.g. after a
checkpoint load). Each step the T gradients are concatenated into one [P] buffer (one CuPy
copy) and one kernel updates all P elements, in float64 arithmetic, stored in the weights' dtype.
"""
from engine.kernels.adam import adam_element
from engine.kernels.common import array_module_of, cuda, float64, for_cuda, launch
from engine.optim import adam_weight_update

# --------------------------------------------------------------------------------------------
# NumPy form: in place on params[name], state.m[name], state.v[name]


def adam_weights_numpy(params: dict, grads: dict, state, names: list, l2s: list,
                                 lr_t: float, adam) -> None:
    for name, lam in zip(names, l2s):
        w, g = params[name], grads[name]
        if lam:
            g = g + 2.0 * lam * w
        adam_weight_update(w, g, state.m[name], state.v[name], lr_t, adam)


# --------------------------------------------------------------------------------------------
# Numba CUDA: one thread per element of the flat buffers

_adam_element_device = for_cuda(adam_element)


@cuda.jit
def _adam_flat_kernel(w, m, v, g, l2, lr_t, beta1, beta2, eps):
    i = cuda.grid(1)
    if i < w.shape[0]:
        wi = float64(w[i])
        gi = float64(g[i]) + 2.0 * l2[i] * wi
        w[i], m[i], v[i] = _adam_element_device(wi, float64(m[i]), float64(v[i]), gi, lr_t, beta1, beta2, eps)


class WeightsAdamCuda:
    """The backend entry `adam_weights` of the cuda backend (same signature as adam_weights_numpy)."""

    def __init__(self):
        self._key = None            # (names, l2s, ids of the views) the buffers were made for

    def _views_in_place(self, params, state, names, l2s) -> bool:
        if self._key is None or self._key[:2] != (tuple(names), tuple(l2s)):
            return False
        return all(params[n] is a and state.m[n] is b and state.v[n] is c
                   for n, (a, b, c) in zip(names, self._key[2]))

    def _pack(self, params, state, names, l2s, xp) -> None:
        """Copy the tensors into flat buffers and rebind the dicts' entries to views of them."""
        dtype = params[names[0]].dtype
        sizes = [params[n].size for n in names]
        self.w, self.m, self.v = (xp.concatenate([d[n].ravel().astype(dtype) for n in names])
                                  for d in (params, state.m, state.v))
        self.l2 = xp.concatenate([xp.full(s, lam, dtype=xp.float64) for s, lam in zip(sizes, l2s)])
        offset, views = 0, []
        for n, size in zip(names, sizes):
            shape = params[n].shape
            params[n], state.m[n], state.v[n] = (flat[offset:offset + size].reshape(shape)
                                                 for flat in (self.w, self.m, self.v))
            views.append((params[n], state.m[n], state.v[n]))
            offset += size
        self._key = (tuple(names), tuple(l2s), views)

    def __call__(self, params: dict, grads: dict, state, names: list, l2s: list, lr_t: float, adam) -> None:
        if not names:
            return
        xp = array_module_of(params[names[0]])
        if not self._views_in_place(params, state, names, l2s):
            self._pack(params, state, names, l2s, xp)
        g = xp.concatenate([grads[n].ravel() for n in names])                        # (P,)
        launch(_adam_flat_kernel, self.w.shape[0], self.w, self.m, self.v, g, self.l2,
               lr_t, adam.beta1, adam.beta2, adam.epsilon)
