"""The parent-enclave transport: addresses, sockets, typed framed messages, the KMS byte relay."""
