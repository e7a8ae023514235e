"""Generative tables: schemas, row storage, the where/search compiler and the row engine."""
