"""Mutation testing of theory/ and constructions/ against the unit tests and non-trained claims.

Run ``python -m mutation`` (or ``make mutation``); see ``mutation/__main__.py``.
"""
