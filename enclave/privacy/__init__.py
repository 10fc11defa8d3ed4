"""Differential-privacy accounting for DP-SGD with Poisson sampling and Gaussian noise.

The accountants are registered in `accountants`: "prv" (primary, privacy loss
distributions with pessimistic discretisation) and "rdp" (cross-check, Renyi DP with
the improved conversion). Only numpy and the standard library are used.
"""
