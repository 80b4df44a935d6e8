"""Measuring a model on a labelled tree, and the HTML report."""
