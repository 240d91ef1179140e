"""WSGI apps: the blocking connection handler (the Python driver of the
request cycle and the hooks of the C core) and the thread-pool worker.
"""
