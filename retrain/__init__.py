"""retrain: transfer learning for a folder of images per class. The package is in layers, in
the order the data flows: data, backbones, features, train, export, predict, evaluate,
api (one call per command) and cli; a layer imports only those before it."""
