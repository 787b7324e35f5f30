"""The only code that imports `kubernetes`: client set-up (client.py), manifest builders
(manifests.py, pure), status mapping (status.py, pure) and API errors as domain errors."""
