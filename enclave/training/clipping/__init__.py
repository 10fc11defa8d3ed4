"""Per-sample clipping for DP-SGD: the engine interface, its two engines and the rules they share."""
