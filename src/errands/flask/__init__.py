"""errands in a Flask application: ``task_blueprint`` (``pip install 'errands[flask]'``)."""
