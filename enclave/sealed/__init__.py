"""Sealed files: the sealed-v1 format, the chunk stream and the Arrow payload.

A sealed file is a header (bound into KMS through its encryption context) followed
by chunked AES-256-GCM ciphertext of an Arrow IPC stream (datasets) or of a training
checkpoint (payload "hermetic-checkpoint-v1").
"""
