"""The study platform's web app: admin for researchers, participant pages and API, Celery tasks."""
from .celery import app as celery_app

__all__ = ["celery_app"]
