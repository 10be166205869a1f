"""Benchmarks that print ratios against peers (``make bench``).

Also an installable Django app (``AGENTOPS_APPS=bench``) so a real Celery worker finds the
benchmark workflows in ``bench/workflows.py`` by the normal autodiscovery.
"""
