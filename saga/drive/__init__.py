"""Ways to drive the core and judge what it did.

One transfer from blocking code (``sync``), a batch with a verdict
(``batch``), a scenario file (``scenario``), and the demo behind ``make run``
(``demo``).
"""
