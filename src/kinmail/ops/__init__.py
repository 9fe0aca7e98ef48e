"""Operations: the demo set-up, fetching from old accounts, backup and restore, reports."""
