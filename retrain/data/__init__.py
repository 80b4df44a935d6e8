"""Images in: class-folder trees and the split, the one image-loading path, augmentation,
training batches, patient metadata, the ISIC layout."""
