"""DP-SGD training inside the enclave: sampler, clipping engines, noise, models, spec, checkpoints."""
