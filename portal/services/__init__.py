"""Services: the only layer that commits to the database (and, later, calls the cluster).

Plain functions with explicit arguments; they check authorization for every object they touch and
raise the domain errors in `errors`, which the web layer maps to HTTP in one place.
"""
