"""Tools around the worker: simulator, demo, backtest, samples, the dev stack.

The worker never imports these (``tests/unit/test_layout.py``).
"""
