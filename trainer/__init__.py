"""The Talk2Face prefix-LM: model, data stream, training loop, generation."""
