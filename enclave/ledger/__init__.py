"""A dataset's budget ledger: signed, write-once entries that account every job's privacy loss."""
