"""Running CUDA artefacts: the launch plan, the step runner, and its two backends (the CUDA
driver over libcuda, and the off-GPU simulator built from the artefact's own kernel source)."""
