"""One module per revision of emailevents' tables, oldest first."""
