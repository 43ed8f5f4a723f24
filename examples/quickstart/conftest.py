import mylib

from pytest_quantbench import Kernel


def pytest_quantbench_kernels():
    return [Kernel(name="mylib", qtype="Q8_0", op="dequantize", fn=mylib.dequantize_q8_0, threads=1),
            Kernel(name="mylib", qtype="Q4_0", op="dequantize", fn=mylib.dequantize_q4_0, threads=1)]
