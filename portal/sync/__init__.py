"""The syncer: keeps the database's view of the cluster current (see syncer.py)."""
