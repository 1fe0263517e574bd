"""A fake Modal control plane for driving the real modal client offline (see server.py).

Development tooling, used by the tests and by ``bench/fanout.py``; not part of the product.
"""
