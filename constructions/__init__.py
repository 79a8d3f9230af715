"""Transformer architectures (torch ``nn.Module``s) and hand-built weights, one module per result."""
