"""errands' template tags (``{% load errands %}``): see :mod:`.errands`."""
