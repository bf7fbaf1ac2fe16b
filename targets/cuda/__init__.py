"""The CUDA targets: kernel table and generated source (kernel_table.py, formats.py, cu/),
nvcc builds (nvcc.py), the CPU harness (sim/), and the compile path (target.py, compile.py)."""
