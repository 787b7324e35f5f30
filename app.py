"""Entry point: gunicorn app:app, flask --app app ... Logs go to stderr as CRATER_LOG_FORMAT says."""
from portal import create_app, logs

app = create_app()
logs.configure(app.config["LOG_FORMAT"])
