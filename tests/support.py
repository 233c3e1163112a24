"""What several test modules share: the project's root, the examples with the options `flatgrad
emit` makes their golden files with, and pyflakes run on a source text.

Test modules import it by name (tests/conftest.py puts tests/ on sys.path); they never import
each other.
"""

from __future__ import annotations

import io
from pathlib import Path

import pyflakes.api
import pyflakes.reporter

ROOT = Path(__file__).resolve().parent.parent

# The array examples: any number N of examples (traced at 8), D=4 features, H=8 hidden, C=3 classes.
_NET = ["--arg", "X=f64[N,4]", "--arg", "y=i64[N]", "--wrt", "W1,b1,W2,b2"]
_LAYERS = ["--arg", "W1=f64[4,8]", "--arg", "b1=f64[8]", "--arg", "W2=f64[8,3]", "--arg", "b2=f64[3]"]
# Each example of examples/ (module and function named alike) -> its `flatgrad emit` options
EXAMPLES = {
    "simple": [],
    "neuron": [],
    "staged": [],
    "svm_net": _NET + _LAYERS,
    "softmax": ["--arg", "X=f64[N,4]", "--arg", "y=i64[N]", "--arg", "W=f64[4,3]", "--arg", "b=f64[3]", "--wrt", "W,b"],
    "mlp": ["--arg", "X=f64[N,4]", "--arg", "t=f64[N,3]", "--wrt", "W1,b1,W2,b2"] + _LAYERS,
    # the same two models as course solutions write them (X.dot(W), np.eye(C)[y], masks, np.var, ...)
    "course_net": _NET + _LAYERS,
    "course_softmax": ["--arg", "W=f64[5,3]", "--arg", "X=f64[N,4]", "--arg", "y=i64[N]", "--wrt", "W"],
    "huber": [],  # a branch on a value, emitted as an `if` block
    "rosenbrock": ["--arg", "x=f64[6]", "--no-unroll"],  # a Python loop, emitted as for loops
}


# Each layer of examples/layers.py -> its `flatgrad emit --layer` options (N examples, traced at 8)
LAYER_EXAMPLES = {
    "affine_forward": ["--arg", "x=f64[N,2,3]", "--arg", "w=f64[6,5]", "--arg", "b=f64[5]"],
    "relu_forward": ["--arg", "x=f64[N,5]"],
    "affine_relu_forward": ["--arg", "x=f64[N,6]", "--arg", "w=f64[6,5]", "--arg", "b=f64[5]"],
    "softmax_loss": [
        "--arg", "x=f64[N,6]", "--arg", "w=f64[6,3]", "--arg", "b=f64[3]", "--arg", "y=i64[N]", "--has-aux",
    ],
    "batchnorm_forward": ["--arg", "x=f64[N,5]", "--arg", "gamma=f64[5]", "--arg", "beta=f64[5]"],
    "layernorm_forward": ["--arg", "x=f64[N,5]", "--arg", "gamma=f64[5]", "--arg", "beta=f64[5]"],
    "dropout_forward": ["--arg", "x=f64[N,5]", "--arg", "mask=f64[N,5]"],
    "conv_forward_naive": ["--arg", "x=f64[N,3,5,5]", "--arg", "w=f64[2,3,3,3]", "--arg", "b=f64[2]"],
    "max_pool_forward_naive": ["--arg", "x=f64[N,3,4,4]"],
    "rnn_step_forward": [
        "--arg", "x=f64[N,4]", "--arg", "prev_h=f64[N,5]", "--arg", "Wx=f64[4,5]", "--arg", "Wh=f64[5,5]",
        "--arg", "b=f64[5]",
    ],
    "rnn_forward": [
        "--arg", "x=f64[N,3,4]", "--arg", "h0=f64[N,5]", "--arg", "Wx=f64[4,5]", "--arg", "Wh=f64[5,5]",
        "--arg", "b=f64[5]",
    ],
}
LAYER_EXAMPLES = {name: [*options, "--layer"] for name, options in LAYER_EXAMPLES.items()}


def pyflakes_messages(source: str, filename: str = "emitted.py") -> str:
    """What pyflakes reports about `source` (as if read from `filename`): empty when clean."""
    stream = io.StringIO()
    pyflakes.api.check(source, filename, pyflakes.reporter.Reporter(stream, stream))
    return stream.getvalue()


def central_differences(f, args: dict, wrt: list[str], step: float = 1e-6) -> list:
    """The gradient of scalar `f(**args)` in each float argument named in `wrt`, by central
    differences on plain NumPy: an oracle that shares no code with flatgrad."""
    import numpy as np

    grads = []
    for name in wrt:
        value = np.asarray(args[name], dtype=float)
        grad = np.zeros_like(value)
        for position in np.ndindex(value.shape):
            shifted = []
            for sign in (1.0, -1.0):
                moved = value.copy()
                moved[position] += sign * step
                shifted.append(f(**{**args, name: moved if moved.shape else float(moved)}))
            grad[position] = (shifted[0] - shifted[1]) / (2 * step)
        grads.append(grad if grad.shape else float(grad))
    return grads


def assert_fresh(grads, inputs, label: str = "") -> None:
    """Each array gradient is the caller's own: writeable, and sharing no memory with an input
    or with another gradient (so that `w -= lr * g` in place changes nothing else)."""
    import numpy as np

    arrays = [g for g in grads if isinstance(g, np.ndarray) and g.ndim]
    for k, grad in enumerate(arrays):
        assert grad.flags.writeable, f"{label}: gradient {k} is read-only"
        for other in [a for a in inputs if isinstance(a, np.ndarray)] + arrays[k + 1:]:
            assert not np.shares_memory(grad, other), f"{label}: gradient {k} shares memory"
