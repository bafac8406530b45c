"""The composition layer: a config becomes objects (path, networks, score model, data, sampler options, guided
score function, checkpoints to load, the resume policy) and is validated before any work. Training and
evaluation both build on it and never import each other."""
