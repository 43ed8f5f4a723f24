"""quantbench: GGUF model files and what to do with them, on the kernels of ``quantbench_kernels``.

Reading a GGUF header and its tensors (``gguf_header``, ``gguf_files``), a model's decode step
(``decode_step``), llama.cpp's own kernels through ggml-python (``llamacpp``), quantization
policies and requantizing a file under one (``policy``, ``requantize``), a reference Gemma 3
forward pass and its tokenizer (``gemma3``, ``tokenizer``), policies compared side by side
(``compare_policies``), and the ``quantbench`` command (``cli``). It never imports pytest or
Hypothesis: the pytest plugin is ``pytest_quantbench``.
"""
