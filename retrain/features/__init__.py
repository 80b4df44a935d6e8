"""Backbone features (bottlenecks): the cache, extraction, cached distorted copies."""
