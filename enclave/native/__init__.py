"""Native access: the NSM ioctl, malloc tuning and per-thread BLAS/OpenMP limits."""
