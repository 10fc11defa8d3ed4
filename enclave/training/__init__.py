"""DP-SGD training inside the enclave: CSPRNG, Poisson sampler, clipping and noise,
registered models, the job spec and sealed checkpoints."""
