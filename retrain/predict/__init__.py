"""Using exported models: loading any of them, classifying, heatmaps, TFLite parity."""
