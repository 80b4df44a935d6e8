"""The model card: typed (model_card), stored in each model format (formats), in words (markdown)."""
