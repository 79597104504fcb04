"""The wire: everything two praxis nodes say to each other, and nothing else.

This package imports nothing from `node/`.
"""
