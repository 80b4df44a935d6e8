"""Writing models: frozen graph, SavedModel, labels and model card, TFLite, int8 rounding."""
