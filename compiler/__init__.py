"""flatgrad: trace a NumPy function, differentiate it, and emit flat forward/backward code.

    prog = compiler.gradient(f, *example_args)   # a GradientProgram
    print(prog.source)                            # the emitted module
    value, grads = prog.value_and_grad(*args)

See README.md for the command line and the emitted module's layout.
"""

from compiler._version import __version__
from compiler.check import check_grad
from compiler.errors import FlatgradError
from compiler.ir import Graph
from compiler.program import GradientProgram, grad, gradient, value_and_grad
from compiler.tracer import GATES, trace

sigmoid = GATES["sigmoid"]
relu = GATES["relu"]
softmax = GATES["softmax"]

__all__ = [
    "__version__",
    "FlatgradError",
    "GradientProgram",
    "Graph",
    "check_grad",
    "grad",
    "gradient",
    "relu",
    "sigmoid",
    "softmax",
    "trace",
    "value_and_grad",
]
