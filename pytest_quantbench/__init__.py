"""pytest-quantbench: bit-exact conformance and throughput benchmarks for GGUF quantized kernels."""
