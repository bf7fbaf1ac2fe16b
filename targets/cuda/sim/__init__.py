"""The CPU harness for the CUDA kernels: the same source built by the host C++ compiler."""
