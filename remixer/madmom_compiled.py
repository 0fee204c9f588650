"""madmom's tracker with its two loops compiled (numba, installed with librosa): the same beats as
madmom-infer's numpy code, several times faster. madmom itself ran both in Cython.

- The bar tracker's Viterbi: madmom-infer decodes each frame with whole-array segment reductions over every
  transition (about 7 s for a minute of audio here). This is madmom's loop again, with its tie and NaN rules:
  the first predecessor reaching the best score wins (strict `>`), a NaN score never wins, a state no
  predecessor reaches stays at -inf, a NaN result is -inf. The same paths and log probabilities, exactly.
- The networks' LSTM layers: madmom-infer steps each frame through four gates in Python (about 7 s a minute
  for the eight networks). Here the input projections of all frames are one matrix product and the recurrence
  is a compiled loop in float32, as madmom's. Summation order differs from BLAS's, so activations differ in
  their last bits (tests: within 1e-5, and the same beats on real recordings).
"""

from __future__ import annotations

import warnings

import numpy as np


def _compiled():
    from numba import njit

    @njit(cache=False, nogil=True)
    def decode(previous, states, pointers, log_probabilities, densities, om_pointers):  # pragma: no cover - jit
        frames = densities.shape[0]
        count = pointers.shape[0] - 1
        back = np.zeros((frames, count), dtype=np.uint32)
        current = np.empty(count, dtype=np.float64)
        for frame in range(frames):
            for state in range(count):
                best = -np.inf
                chosen = -1
                for t in range(pointers[state], pointers[state + 1]):
                    score = previous[states[t]] + log_probabilities[t]
                    if score > best or (chosen == -1 and score == best):
                        best = score
                        chosen = t
                if chosen >= 0:
                    back[frame, state] = states[chosen]
                value = best + densities[frame, om_pointers[state]]
                current[state] = -np.inf if np.isnan(value) else value
            for state in range(count):
                previous[state] = current[state]
        return back, previous

    return decode


_DECODE = None


def viterbi(hmm, observations: np.ndarray) -> tuple[np.ndarray, float]:
    """(best state path, its log probability) of a madmom-infer HiddenMarkovModel, as its own `viterbi`."""
    global _DECODE
    if _DECODE is None:
        _DECODE = _compiled()
    tm, om = hmm.transition_model, hmm.observation_model
    densities = np.ascontiguousarray(om.log_densities(observations), dtype=np.float64)
    with np.errstate(divide="ignore"):
        previous = np.log(hmm.initial_distribution).astype(np.float64)
    back, last = _DECODE(previous, np.asarray(tm.states, dtype=np.int64), np.asarray(tm.pointers, dtype=np.int64),
                         np.asarray(tm.log_probabilities, dtype=np.float64), densities,
                         np.asarray(om.pointers, dtype=np.int64))
    state = int(np.argmax(last))
    log_probability = float(last[state])
    if np.isinf(log_probability):
        warnings.warn("-inf log probability during Viterbi decoding cannot find a valid path", RuntimeWarning,
                      stacklevel=2)
        return np.empty(0, dtype=np.uint32), log_probability
    path = np.empty(len(densities), dtype=np.uint32)
    for frame in range(len(densities) - 1, -1, -1):
        path[frame] = state
        state = int(back[frame, state])
    return path, log_probability


def _lstm_kernel():
    from numba import njit

    @njit(cache=False, nogil=True, fastmath=False)
    def run(inputs, recurrent, peepholes):  # pragma: no cover - jit
        # inputs: (4, T, H) = data @ W + b for the input gate, forget gate, cell, output gate; recurrent:
        # (4, H, H); peepholes: (3, H) for the input, forget and output gates.
        frames, hidden = inputs.shape[1], inputs.shape[2]
        out = np.zeros((frames, hidden), dtype=np.float32)
        prev = np.zeros(hidden, dtype=np.float32)
        state = np.zeros(hidden, dtype=np.float32)
        gates = np.zeros((4, hidden), dtype=np.float32)
        one = np.float32(1.0)
        for t in range(frames):
            for g in range(4):
                for j in range(hidden):
                    value = inputs[g, t, j]
                    if g == 0 or g == 1:
                        value += state[j] * peepholes[g, j]
                    if g != 3:
                        total = np.float32(0.0)
                        for k in range(hidden):
                            total += prev[k] * recurrent[g, k, j]
                        value += total
                    gates[g, j] = value
            for j in range(hidden):
                ig = one / (one + np.exp(-gates[0, j]))
                fg = one / (one + np.exp(-gates[1, j]))
                state[j] = np.tanh(gates[2, j]) * ig + state[j] * fg
            for j in range(hidden):
                total = np.float32(0.0)
                for k in range(hidden):
                    total += prev[k] * recurrent[3, k, j]
                og = one / (one + np.exp(-(gates[3, j] + state[j] * peepholes[2, j] + total)))
                out[t, j] = np.tanh(state[j]) * og
            for j in range(hidden):
                prev[j] = out[t, j]
        return out

    return run


_LSTM = None


class CompiledLSTM:
    """A madmom-infer LSTMLayer (peephole gates: sigmoid; cell and output: tanh) run by the compiled loop."""

    def __init__(self, layer):
        from madmom_infer.ml.nn.activations import sigmoid, tanh

        gates = (layer.input_gate, layer.forget_gate, layer.cell, layer.output_gate)
        peephole_gates = (layer.input_gate, layer.forget_gate, layer.output_gate)
        if not (all(g.activation_fn is sigmoid and g.peephole_weights is not None for g in peephole_gates)
                and layer.cell.activation_fn is tanh and layer.activation_fn is tanh
                and not np.any(layer.init) and not np.any(layer.cell_init)):
            raise ValueError("not the peephole LSTM of madmom's downbeat networks")
        self.weights = [np.ascontiguousarray(g.weights, dtype=np.float32) for g in gates]
        self.biases = [np.asarray(g.bias, dtype=np.float32) for g in gates]
        self.recurrent = np.ascontiguousarray(np.stack([g.recurrent_weights for g in gates]), dtype=np.float32)
        self.peepholes = np.ascontiguousarray(np.stack([g.peephole_weights for g in peephole_gates]),
                                              dtype=np.float32)

    def __call__(self, data: np.ndarray, reset: bool = True, **kwargs) -> np.ndarray:
        global _LSTM
        if _LSTM is None:
            _LSTM = _lstm_kernel()
        data = np.asarray(data, dtype=np.float32)
        inputs = np.ascontiguousarray(np.stack([data @ w + b for w, b in zip(self.weights, self.biases)]))
        return _LSTM(inputs, self.recurrent, self.peepholes)

    def reset(self) -> None:
        """Stateless between calls, as madmom's layers are after their reset."""


def compile_lstms(network) -> None:
    """Swap a madmom-infer network's LSTM layers (inside its bidirectional layers) for compiled ones, in place."""
    from madmom_infer.ml.nn.layers import BidirectionalLayer, LSTMLayer

    for layer in network.layers:
        if isinstance(layer, BidirectionalLayer):
            for side in ("fwd_layer", "bwd_layer"):
                if isinstance(getattr(layer, side), LSTMLayer):
                    setattr(layer, side, CompiledLSTM(getattr(layer, side)))


class CompiledViterbi:
    """A madmom-infer HiddenMarkovModel whose `viterbi` is the compiled one (everything else delegated)."""

    def __init__(self, hmm):
        self._hmm = hmm

    def __getattr__(self, name):
        return getattr(self._hmm, name)

    def viterbi(self, observations: np.ndarray) -> tuple[np.ndarray, float]:
        return viterbi(self._hmm, observations)
