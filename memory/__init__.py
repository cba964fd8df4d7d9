"""Shared vector memory on ChromaDB and its embedders, installed as ``huddle.memory``."""
