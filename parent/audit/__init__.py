"""Empirical privacy audit in one training run (Steinke, Nasr & Jagielski, NeurIPS 2023).

`bound` turns a guessing game's score into a lower bound on epsilon; `canaries` plays
the game against the DP-SGD implementation with white-box gradient canaries.
"""

#: The canary kinds `canaries.audit_spec` plays (here, importing nothing, so the CLI's --help loads no torch).
CANARY_KINDS = ("dirac", "gaussian")
