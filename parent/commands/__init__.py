"""One module per `hermetic` sub-command; each exposes `register(subparsers)`."""
